"""Registers Arkivflöde's web apps with Airflow's API server, linked from Airflow's navigation bar.

* ``/arkiv`` — the archivist's quarantine page and the system owner's status page (behind Airflow's
  login; plugins/arkivflode_airflow/ui.py);
* ``/arkiv-api`` — the archive API and its search page (transforms/access): business systems,
  archivists and researchers authenticate with their own archive credentials (`arkiv access-token`),
  since a business system is not an Airflow user. It also runs on its own with `arkiv api`.

Each DAG run names the period it archives, not only UTC times: a listener
(plugins/arkivflode_airflow/listeners.py) writes it into the run's note when the run starts, and the
systems' timetable (plugins/arkivflode_airflow/timetable.py, registered here) puts it in the run ID,
which the run lists show.

The API server's request log (uvicorn's access log) is filtered so that it never prints the
query string of a request to either app, and masks anything shaped like a personnummer in their paths.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from arkivflode_airflow import listeners
from arkivflode_airflow.timetable import PeriodTimetable
from arkivflode_airflow.ui import BASE, app

from transforms.access.api import create_app, install_request_log_filter

ACCESS_BASE = "/arkiv-api"
# the API server's request log must not print our query strings (a search or a purpose could name a person)
install_request_log_filter((ACCESS_BASE, BASE))


class ArkivflodePlugin(AirflowPlugin):
    name = "arkivflode"
    listeners = [listeners]
    timetables = [PeriodTimetable]
    fastapi_apps = [
        {"app": app, "url_prefix": BASE, "name": "Arkivflöde: archivist's page"},
        {"app": create_app(), "url_prefix": ACCESS_BASE, "name": "Arkivflöde: archive API"},
    ]
    external_views = [
        {"name": "Arkivflöde: karantän / quarantine", "href": f"{BASE}/", "destination": "nav",
         "category": "browse", "url_route": "arkivflode"},
        {"name": "Arkivflöde: leveranser / deliveries due", "href": f"{BASE}/status", "destination": "nav",
         "category": "browse", "url_route": "arkivflode-status"},
        {"name": "Arkivflöde: sök i arkivet / search", "href": f"{ACCESS_BASE}/archive", "destination": "nav",
         "category": "browse", "url_route": "arkivflode-search"},
    ]
