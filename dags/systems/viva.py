"""The Airflow DAG of the source system whose YAML sits beside this file under the same name.

Every system has this same loader (copy it, named after the new YAML), so that each system is a
DAG file of its own: a broken YAML is one import error for its own file; the others still load.
"""

from arkivflode_airflow.factory import system_dag

dag = system_dag(__file__)
