#!/bin/bash
# Creates Airflow's metadata database and the archive catalogue's database on first start.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username postgres <<SQL
CREATE USER airflow WITH PASSWORD '${ARKIV_DB_PASSWORD}';
CREATE DATABASE airflow OWNER airflow;
CREATE USER arkiv WITH PASSWORD '${ARKIV_DB_PASSWORD}';
CREATE DATABASE arkiv_catalogue OWNER arkiv;
SQL
