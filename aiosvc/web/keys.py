"""The application's typed keys: how handlers reach the core's services and the web layer's own.

They live in the web layer, which owns the application: the core never imports aiohttp.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from aiosvc.agents import AgentRegistry
from aiosvc.bus import Bus
from aiosvc.cache import Cache
from aiosvc.commands.service import CommandService
from aiosvc.config import Settings
from aiosvc.core import Core
from aiosvc.metrics import Metrics
from aiosvc.peers.computers import Computers
from aiosvc.peers.links import Peers
from aiosvc.projects import Projects
from aiosvc.store import Database, Store
from aiosvc.web.first_page import FirstPage
from aiosvc.web.front_door import FrontDoor
from aiosvc.web.open_streams import OpenStreams
from aiosvc.web.security import AccessGate

#: The configuration in effect: ``app[SETTINGS].config`` (replaced by each reload).
SETTINGS = web.AppKey("settings", Settings)
#: The core's parts together (each also under its own key, for the handlers).
CORE = web.AppKey("core", Core)
DATABASE = web.AppKey("database", Database)
STORE = web.AppKey("store", Store)
BUS = web.AppKey("bus", Bus)
CACHE = web.AppKey("cache", Cache)
AGENTS = web.AppKey("agents", AgentRegistry)
#: The command service (not ``store.tables.COMMANDS``, the table of commands).
COMMAND_SERVICE = web.AppKey("commands", CommandService)
PROJECTS = web.AppKey("projects", Projects)
COMPUTERS = web.AppKey("computers", Computers)
PEERS = web.AppKey("peers", Peers)
STREAMS = web.AppKey("streams", OpenStreams)
#: The body of the unfiltered first page of sessions, built once per change.
FIRST_PAGE = web.AppKey("first_page", FirstPage)
ACCESS_GATE = web.AppKey("access_gate", AccessGate)
#: The front door (the login routes count failed sign-ins in its throttle).
FRONT_DOOR = web.AppKey("front_door", FrontDoor)
STARTED_AT = web.AppKey("started_at", float)  # time.monotonic() when the app was made
METRICS = web.AppKey("metrics", Metrics)
METRICS_REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)  # what /metrics shows
