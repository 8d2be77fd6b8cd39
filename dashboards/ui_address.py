"""Where the MLflow UI can be reached: whether a bind host is loopback, the URLs to show, and what the
server must accept so that those URLs work.

A server bound to 0.0.0.0 (or ::) listens on every address of the machine: showing http://127.0.0.1
alone would hide that it is reachable from the network. So a wildcard host shows the machine's name,
then the address of each interface (Linux: an ioctl per interface for IPv4, /proc/net/if_inet6 for
IPv6; elsewhere: what the name resolves to).
"""
from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path
from urllib.parse import quote, urlencode

WILDCARD_HOSTS = ("0.0.0.0", "::", "")
SIOCGIFADDR = 0x8915  # Linux: get an interface's IPv4 address
IFNAMSIZ = 16
# What MLflow's Host-header check (its guard against DNS rebinding) accepts by default: loopback names
# and private ranges. Setting MLFLOW_SERVER_ALLOWED_HOSTS replaces that list, so it is kept here.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
PRIVATE_HOST_PATTERNS = ("10.*", "192.168.*", *(f"172.{i}.*" for i in range(16, 32)), "fc00:*", "fd00:*")
# MLflow 3.17's UI routes in the URL's fragment (#/experiments/<id>/runs) and reads page state from the query
# after it. It shows an experiment as GenAI (traces) or model training by a browser-wide switch, saved in the
# browser and "genai" until the user flips it; `workflowType` in the link sets it for the page opened.
ML_WORKFLOW = {"workflowType": "machine_learning"}


def is_loopback(host: str) -> bool:
    """True when `host` (an address or a name) reaches this machine only: every address it names is loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:  # a name that does not resolve: the server will say so; it is not known to be local
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def _ipv4_interface_addresses() -> list[str]:
    """The IPv4 address of each network interface; [] where the ioctl does not exist (not Linux)."""
    try:
        import fcntl

        names = [name for _, name in socket.if_nameindex()]
    except (ImportError, OSError):
        return []
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for name in names:
            request = struct.pack("256s", name.encode()[:IFNAMSIZ - 1])
            try:
                reply = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)
            except OSError:  # an interface without an IPv4 address
                continue
            found.append(socket.inet_ntoa(reply[20:24]))  # struct ifreq: name[16], sockaddr_in (family, port, addr)
    return found


def _ipv6_interface_addresses() -> list[str]:
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return []
    return [str(ipaddress.IPv6Address(int(line.split()[0], 16))) for line in lines if line.strip()]


def machine_addresses(ipv6: bool = False) -> list[str]:
    """The addresses other machines can reach this one at (no loopback, no link-local), in interface order."""
    found = _ipv4_interface_addresses() + (_ipv6_interface_addresses() if ipv6 else [])
    if not found:
        try:
            found = [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)]
        except OSError:
            found = []
    out: list[str] = []
    for address in found:
        ip = ipaddress.ip_address(address)
        if ip.is_loopback or ip.is_link_local or (ip.version == 6) != ipv6 or address in out:
            continue
        out.append(address)
    return out


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def ui_urls(host: str, port: int) -> list[str]:
    """The addresses to open: the bind host itself, or for a wildcard host the machine's name and addresses."""
    if host not in WILDCARD_HOSTS:
        return [_url(host, port)]
    return [_url(socket.gethostname(), port)] + [_url(a, port) for a in machine_addresses(ipv6=host == "::")]


def ui_banner(host: str, port: int) -> str:
    """The line that tells where the UI is."""
    everywhere = "  (every address of this machine)" if host in WILDCARD_HOSTS else ""
    return f"MLflow UI: {', '.join(ui_urls(host, port))}{everywhere}  (Ctrl-C to stop)"


def runs_url(base: str, experiment_id: str, profile: str | None = None, view: str | None = None) -> str:
    """The UI page listing an experiment's runs as model training (`base`: e.g. http://127.0.0.1:5000): in the
    saved `view` (`ablation.tracking.views`: its own filter, order and columns), else with `profile`, filtered to
    that profile's runs (tag `profile`: a study's rows and its parent). The UI ignores a view when the link
    also sets a filter, so `view` wins."""
    query = dict(ML_WORKFLOW)
    if view:
        query["viewStateShareKey"] = view
    elif profile:
        query["searchFilter"] = f"tags.profile = '{profile}'"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{urlencode(query, quote_via=quote)}"


def exposure_warning(host: str, port: int) -> str | None:
    """One line for a host other machines may reach (None for loopback): the server asks no one for a login."""
    if is_loopback(host):
        return None
    return (f"--host {host}: the MLflow server has no authentication; anyone who can reach port {port} can read, "
            "change and delete every run (a shared server with logins: README, 'Working as a team')")


def check_can_listen(host: str, port: int) -> None:
    """Raise a one-line OSError when no server could listen on host:port (a port in use, an address that is not
    this machine's): MLflow would log the error among its start-up lines and exit 0."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host or "0.0.0.0", port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except OSError as exc:
        raise OSError(f"--host {host}: {exc.strerror or exc}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a port in TIME_WAIT is free
        try:
            probe.bind(address)
        except OSError as exc:
            raise OSError(f"cannot listen on {_url(host, port)[7:]} ({exc.strerror or exc}); "
                          "choose another --port or --host") from None


def _host_of(url: str) -> str:
    return url.split("://", 1)[1].rsplit(":", 1)[0]


def server_env(host: str, port: int) -> dict[str, str]:
    """MLflow security settings under which the URLs shown for `host` work, and nothing more ({} for loopback).

    MLflow refuses a request whose Host header is not loopback or a private address (so the machine's
    name would get 403), and a state-changing request whose Origin is another site (so the UI opened at
    http://NAME:PORT could not rename or delete): both lists get exactly the URLs shown, besides MLflow's own
    defaults. A list the user has set already (MLFLOW_SERVER_ALLOWED_HOSTS, ..._CORS_ALLOWED_ORIGINS) is kept.
    """
    if is_loopback(host):
        return {}
    urls = ui_urls(host, port) + ([_url(socket.gethostname(), port)] if host not in WILDCARD_HOSTS else [])
    names = list(dict.fromkeys([*LOOPBACK_NAMES, *(_host_of(u) for u in urls)]))
    # An entry with '*' is matched as a glob pattern, where '[' opens a character class: escape it.
    hosts = [p for n in names for p in (n, f"{n.replace('[', '[[]', 1)}:*")] + list(PRIVATE_HOST_PATTERNS)
    return {"MLFLOW_SERVER_ALLOWED_HOSTS": ",".join(hosts), "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS": ",".join(urls)}


__all__ = ["is_loopback", "machine_addresses", "ui_urls", "ui_banner", "runs_url", "exposure_warning",
           "check_can_listen", "server_env", "WILDCARD_HOSTS"]
