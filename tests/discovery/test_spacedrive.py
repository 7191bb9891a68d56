"""Spacedrive interop of pos-discovery and of the client library, against the real programs,
a real redis-server and real HTTP/QUIC on loopback.

The fixtures are written from Spacedrive 0.4.0's public source (not copied from it):
apps/p2p-relay/src/main.rs registers with reqwest's `.json(&RelayServerEntry {id, peer_id,
addrs})`, i.e. serde_json's compact text with the fields in declaration order, `peer_id` being
`keypair.public().to_peer_id().to_base58()`, every 9 minutes, and counts only HTTP 200 as
success; core/src/p2p/manager.rs parses the list as `Vec<RelayServerEntry>` and skips an entry
whose `PeerId::from_str(&relay.peer_id)` fails ("Failed to parse Relay peer ID").

PeerIds here come from an independent base58 written below (not the C code under test), checked
against the libp2p peer-id spec's example (12D3KooWD3eck..., whose CIDv1 base32 form, decoded
with Python's own base32, holds the same key).
"""
import base64
import ipaddress
import json
import os
import signal
import socket
import subprocess
import time
import uuid

from harness import Proc, Redis, binary, free_port, http, run, test, tmpdir, wait_until
from suite import P2P, Relay

SECRET = "sd-test-secret-" + os.urandom(8).hex()
RELAYS = "/api/p2p/relays"
TTL = 2  # the normal TTL of this test's pos-discovery; the Spacedrive TTL keeps its default

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
ED25519_PEER_ID_PREFIX = bytes.fromhex("002408011220")  # identity multihash, protobuf Ed25519

# The libp2p peer-id spec's example and its CIDv1 form (multibase 'b', base32).
SPEC_PEER_ID = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
SPEC_CID = "bafzaajaiaejcal72gwuz2or47oyxxn6b3rkwdmmkrxgkjxzy3rqt5kczyn7lcm3l"


def b58encode(raw):
    n = int.from_bytes(raw, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = B58[r] + out
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + out


def b58decode(text):
    n = 0
    for c in text:
        n = n * 58 + B58.index(c)
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + (n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b"")


def libp2p_peer_id(key):
    return b58encode(ED25519_PEER_ID_PREFIX + key)


def key_of_base64(peer_id):
    return base64.b64decode(peer_id + "=")


def spacedrive_parses(entry):
    """What Spacedrive's client accepts: RelayServerEntry {id: Uuid, peer_id: String,
    addrs: Vec<SocketAddr>} (unknown fields ignored), then PeerId::from_str(peer_id), which for
    an Ed25519 key is base58 of the identity multihash of the protobuf key."""
    uuid.UUID(entry["id"])
    for a in entry["addrs"]:
        host, port = a.rsplit(":", 1)
        ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
        assert 0 <= int(port) <= 65535
    raw = b58decode(entry["peer_id"])
    return raw[:6] == ED25519_PEER_ID_PREFIX and len(raw) == 38 and \
        b58encode(raw) == entry["peer_id"]


def check_vectors():
    cid = SPEC_CID[1:].upper()
    cid_bytes = base64.b32decode(cid + "=" * (-len(cid) % 8))
    assert cid_bytes[:2] == bytes([0x01, 0x72])  # CIDv1, libp2p-key
    assert b58decode(SPEC_PEER_ID) == cid_bytes[2:]
    assert libp2p_peer_id(cid_bytes[8:]) == SPEC_PEER_ID


def reqwest_post(port, body):
    """The registration exactly as Spacedrive's relay sends it with reqwest over HTTP/1.1
    (hyper writes lower-case header names); returns (status, body)."""
    req = (f"POST {RELAYS} HTTP/1.1\r\n"
           f"authorization: Bearer {SECRET}\r\n"
           "content-type: application/json\r\n"
           "accept: */*\r\n"
           f"host: 127.0.0.1:{port}\r\n"
           f"content-length: {len(body)}\r\n\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(req)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), rest


class Discovery:
    def __init__(self, redis, *extra):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc([binary("discovery-api/pos-discovery"), "--listen",
                          f"127.0.0.1:{self.port}", "--redis", redis.url, "--ttl", str(TTL),
                          *extra], env={"POS_P2P_SECRET": SECRET}, name="pos-discovery")
        wait_until(lambda: http("GET", self.url + RELAYS)[0] == 200, 10,
                   what="pos-discovery to answer")

    def raw_list(self):
        status, headers, body = http("GET", self.url + RELAYS)
        assert status == 200, (status, body)
        return body

    def ids(self):
        return {e["id"] for e in json.loads(self.raw_list())}

    def post(self, entry):
        return http("POST", self.url + RELAYS, json.dumps(entry).encode(),
                    {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"})


@test
def spacedrive_relay_registers_and_its_clients_can_parse_the_list():
    check_vectors()
    redis = Redis()
    disc = Discovery(redis)
    rid = "3b0f6c1e-6b1d-4a35-9c53-7a2f0e1d9c44"
    # serde_json of RelayServerEntry: compact, fields in declaration order, Uuid hyphenated
    # lower case, SocketAddr as "ip:port" / "[v6]:port".
    body = ('{"id":"%s","peer_id":"%s","addrs":["203.0.113.7:7373","[2001:db8::7]:7373"]}'
            % (rid, SPEC_PEER_ID)).encode()
    status, answer = reqwest_post(disc.port, body)
    assert status == 200, (status, answer)  # Spacedrive's relay counts only 200 as success
    assert json.loads(answer) == {"id": rid, "ttl": 600}, answer
    # Listed byte for byte as registered: the form Spacedrive's client parses.
    assert disc.raw_list() == b"[" + body + b"]", disc.raw_list()
    assert all(spacedrive_parses(e) for e in json.loads(disc.raw_list()))
    # Kept for the Spacedrive TTL (600 s), not the normal 2 s: Redis says so.
    pttl = int(redis.cli("PTTL", f"pos:relay:{rid}"))
    assert 590_000 < pttl <= 600_000, pttl
    expiry_ms = float(redis.cli("ZSCORE", "pos:relays", rid))
    assert 590_000 < expiry_ms - time.time() * 1000 <= 600_500, expiry_ms
    # A re-registration (every 540 s) replaces the entry and restarts its 600 s.
    status, _ = reqwest_post(disc.port, body)
    assert status == 200 and disc.raw_list() == b"[" + body + b"]"

    # Strict: only canonical Ed25519 PeerIds; nothing stored on refusal.
    key = bytes(range(32))
    good = libp2p_peer_id(key)
    refused = {
        "sha2-256 multihash (an RSA key's PeerId)": "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",
        "a leading '1' too many": "1" + good,
        "secp256k1 key type": b58encode(bytes.fromhex("002408021220") + key),
        "protobuf fields reordered": b58encode(bytes.fromhex("00241220") + key + b"\x08\x01"),
        "'l' outside base58": good[:-1] + "l",
        "truncated": good[:-1],
    }
    for what, pid in refused.items():
        bad_id = str(uuid.uuid4())
        status, _, answer = disc.post({"id": bad_id, "peer_id": pid, "addrs": ["192.0.2.1:1"]})
        assert status == 400 and b"PeerId" in answer, (what, status, answer)
        assert redis.cli("EXISTS", f"pos:relay:{bad_id}") == "0", what
    assert disc.ids() == {rid}


@test
def per_registration_ttl_pos_relay_sigkilled_gone_spacedrive_kept():
    redis = Redis()
    disc = Discovery(redis)
    relay = Relay(redis, disc, SECRET).start()
    wait_until(lambda: relay.id in disc.ids(), 5, what="the pos relay registered")
    key = os.urandom(32)
    b64_entry = {"id": str(uuid.uuid4()), "peer_id": base64.b64encode(key).decode().rstrip("="),
                 "addrs": ["192.0.2.1:7373"]}
    sd_entry = {"id": str(uuid.uuid4()), "peer_id": libp2p_peer_id(key),
                "addrs": ["192.0.2.2:7373"]}
    for e, ttl in ((b64_entry, TTL), (sd_entry, 600)):
        status, _, answer = disc.post(e)
        assert status == 200 and json.loads(answer)["ttl"] == ttl, (status, answer)
    assert disc.ids() == {relay.id, b64_entry["id"], sd_entry["id"]}
    assert 0 < int(redis.cli("PTTL", f"pos:relay:{b64_entry['id']}")) <= TTL * 1000
    relay.proc.stop(signal.SIGKILL)
    t0 = time.monotonic()
    # Both base64-form entries leave within their 2 s TTL (+ refresh margin) ...
    wait_until(lambda: disc.ids() == {sd_entry["id"]}, TTL + 2,
               what="the base64-form entries gone")
    assert time.monotonic() - t0 <= TTL + 2
    # ... while the Spacedrive-form entry stays for its 600 s.
    assert int(redis.cli("PTTL", f"pos:relay:{sd_entry['id']}")) > 590_000


@test
def client_pins_the_same_key_from_either_form():
    redis = Redis()
    disc = Discovery(redis, "--ttl", "30")
    relay = Relay(redis, disc, SECRET).start()
    token = relay.token()
    wait_until(lambda: relay.id in disc.ids(), 5, what="the pos relay registered")
    key = key_of_base64(relay.peer_id)
    addr = f"127.0.0.1:{relay.port}"
    as_peer_id = {"id": str(uuid.uuid4()), "peer_id": libp2p_peer_id(key), "addrs": [addr]}
    other_key = {"id": str(uuid.uuid4()), "peer_id": libp2p_peer_id(os.urandom(32)),
                 "addrs": [addr]}
    for e in (as_peer_id, other_key):
        assert disc.post(e)[0] == 200
    r = subprocess.run([P2P, "relays", "--api-url", disc.url, "--token", token, "--identity",
                        os.path.join(tmpdir(), "identity"), "--timeout", "3"],
                       capture_output=True, text=True, timeout=30)
    assert "runtime error:" not in r.stderr and "Sanitizer" not in r.stderr, r.stderr
    lines = {ln.split()[1]: ln for ln in r.stdout.splitlines() if ln.startswith("relay ")}
    assert "accepted" in lines[relay.id], r.stdout
    assert "accepted" in lines[as_peer_id["id"]], r.stdout  # same key, PeerId form: pinned
    assert "accepted" not in lines[other_key["id"]], r.stdout  # another key: refused
    # pos-p2p id and pos-relay init print both forms; stdout keeps the base64 line.
    ident = os.path.join(tmpdir(), "identity")
    r = subprocess.run([P2P, "id", "--identity", ident], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1, (r.stdout, r.stderr)
    b64 = r.stdout.strip()
    assert libp2p_peer_id(key_of_base64(b64)) in r.stderr, r.stderr
    r = subprocess.run([P2P, "id", "--identity", ident, "--libp2p"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == libp2p_peer_id(key_of_base64(b64)), r
    d = tmpdir()
    r = subprocess.run([binary("relay/pos-relay"), "init", "--config", os.path.join(d, "r.json")],
                       input=SECRET + "\n", capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1, (r.stdout, r.stderr)
    assert libp2p_peer_id(key_of_base64(r.stdout.strip())) in r.stderr, r.stderr


if __name__ == "__main__":
    run()
