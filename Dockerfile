# Arkivflöde image: Python 3.11 with the locked dependencies (Airflow 3.3 included) and the
# project installed. Used by docker-compose.yml for every Airflow service.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AIRFLOW_HOME=/opt/airflow \
    ARKIV_HOME=/data

RUN useradd --create-home --uid 50000 arkiv \
    && mkdir -p /opt/airflow /data /opt/arkivflode \
    && chown -R arkiv /opt/airflow /data /opt/arkivflode

WORKDIR /opt/arkivflode
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir "uv==0.13.9" \
    && uv pip sync --system requirements.lock
COPY transforms ./transforms
COPY demo ./demo
COPY expectations ./expectations
COPY plugins ./plugins
COPY dags ./dags
RUN uv pip install --system --no-deps .

USER arkiv
ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/arkivflode/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/arkivflode/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
# api-server (UI, REST and execution API); a worker's log server, from which the api-server reads task logs
EXPOSE 8080 8793
