"""python3-zeroconf as the other side of the interop tests (run with /usr/bin/python3).

  zc_helper.py browse SECONDS   print one JSON line per service seen (added/updated/removed)
  zc_helper.py register INSTANCE PORT ADDR,ADDR KEY=VALUE...   publish _sd._udp until SIGTERM
  zc_helper.py register-raw INSTANCE PORT ADDR,ADDR HEX   the same with TXT rdata given in hex
                                                          (any bytes, repeated keys, NUL...)
"""
import json
import signal
import socket
import sys
import time

from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

TYPE = "_sd._udp.local."


def browse(seconds):
    zc = Zeroconf(ip_version=IPVersion.All)
    t0 = time.monotonic()

    def on_change(zeroconf, service_type, name, state_change):
        rec = {"event": state_change.name, "name": name, "t": time.monotonic() - t0,
               "mono": time.monotonic()}
        if state_change is not ServiceStateChange.Removed:
            info = zeroconf.get_service_info(service_type, name, timeout=3000)
            if info:
                rec["mono_resolved"] = time.monotonic()
                rec["port"] = info.port
                rec["addrs"] = info.parsed_addresses()
                rec["txt"] = {k.decode(errors="replace"): (v.decode(errors="replace") if v is not None else None)
                              for k, v in info.properties.items()}
        print(json.dumps(rec), flush=True)

    ServiceBrowser(zc, TYPE, handlers=[on_change])
    end = time.monotonic() + seconds
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    while time.monotonic() < end and not stop:
        time.sleep(0.05)
    zc.close()


def register(instance, port, addrs, kvs, raw=None):
    # zeroconf sends bytes properties as the TXT rdata itself.
    props = bytes.fromhex(raw) if raw is not None else dict(kv.split("=", 1) for kv in kvs)
    info = ServiceInfo(TYPE, f"{instance}.{TYPE}", port=int(port), properties=props,
                       server=f"zc-{socket.gethostname()}.local.",
                       parsed_addresses=addrs.split(","))
    zc = Zeroconf(ip_version=IPVersion.All)
    zc.register_service(info)
    print("registered", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    while not stop:
        time.sleep(0.05)
    zc.unregister_service(info)
    zc.close()


if __name__ == "__main__":
    if sys.argv[1] == "browse":
        browse(float(sys.argv[2]))
    elif sys.argv[1] == "register-raw":
        register(sys.argv[2], sys.argv[3], sys.argv[4], [], sys.argv[5])
    else:
        register(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
