"""Property tests (Hypothesis) of `aiic serve`'s input handling, in process (Starlette's
TestClient): no JSON body, multipart body or URL string gives a 5xx, and every 200 answers each
image. No traffic leaves the process: names are resolved only when numeric (no DNS query), and a
connection to an address that passes the SSRF checks goes to a loopback server of the test's,
which redirects to a generated Location or serves an image."""

import contextlib
import http.server
import io
import json
import socket
import threading
from urllib.parse import quote, unquote

import pytest
import urllib3
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.serving import fetch as fetch_module
from pipeline.serving.serve import Settings, create_app

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def png(size=40, colour="green") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


class Host(http.server.BaseHTTPRequestHandler):
    """/r/<Location, percent-encoded>: a redirect there; anything else: an image."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        with contextlib.suppress(OSError):
            if self.path.startswith("/r/"):
                self.send_response(302)
                self.send_header("Location", unquote(self.path[3:], "latin-1"))
                self.end_headers()
                return
            body = png()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


@pytest.fixture(scope="module")
def client(exported_model):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Host)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    numeric_only = socket.getaddrinfo

    def no_dns(host, port, *args, **kwargs):
        kwargs["flags"] = socket.AI_NUMERICHOST
        return numeric_only(host, port, *args, **kwargs)

    def to_the_test_host(scheme, host, address, port):
        return urllib3.HTTPConnectionPool("127.0.0.1", httpd.server_address[1], retries=False)

    limits = Settings(model_dir=str(exported_model), max_images=4, max_body_bytes=200_000)
    with pytest.MonkeyPatch.context() as patch, TestClient(create_app(limits)) as test_client:
        patch.setattr(socket, "getaddrinfo", no_dns)
        patch.setattr(fetch_module, "_connection_pool", to_the_test_host)
        yield test_client
    httpd.shutdown()


def answered(response, count):
    """No 5xx; a 200 has one result per image, each scored or with a reason."""
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        results = response.json()["results"]
        assert len(results) == count
        assert all((row["p_real"] is None) == bool(row["reason"]) for row in results)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["urls", "files", "x"]) | st.text(max_size=5), children)
    ),
    max_leaves=12,
)


@PROPERTY
@given(body=json_values.map(json.dumps) | st.binary(max_size=300))
@example(body="[" * 100_000)  # deeper than Python's recursion limit
@example(body='{"urls": ["http://[::1", "http://a]b:80/"]}')
@example(body='{"urls": ["http://8.8.8.8/\\ud800"]}')  # a lone surrogate: no UTF-8 for it
@example(body=b'{"urls": ["\xff"]}')
def test_no_json_body_gives_a_5xx(client, body):
    response = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code < 500, response.text


hosts = st.one_of(
    st.ip_addresses().map(lambda address: f"[{address}]" if address.version == 6 else str(address)),
    st.ip_addresses(v=6).map(str),  # unbracketed: not a valid URL host
    st.text(max_size=15),
    st.sampled_from(["[::1", "a]b", "[v1.x]", "2130706433", "0x7f.1", "[::ffff:7f00:1]", ""]),
)
urls = st.one_of(
    st.text(max_size=40),
    st.builds(
        "{}://{}{}{}".format,
        st.sampled_from(["http", "https", "HTTP", "ftp", "file", ""]),
        hosts,
        st.sampled_from(["", ":80", ":0", ":99999", ":-1", ":x", ":"]),
        st.text(max_size=15),
    ),
)


@PROPERTY
@given(url=urls)
@example(url="http://[::1")
@example(url="http://8.8.8.8:x/")
def test_no_url_gives_a_5xx_or_costs_another_image_its_result(client, url):
    good = "http://8.8.8.8/image.png"  # a public address: served by the test's host
    response = client.post("/predict", json={"urls": [url, good]})
    answered(response, 2)
    if response.status_code == 200:
        assert response.json()["results"][1]["reason"] == ""


@PROPERTY
@given(location=st.binary(max_size=40).map(lambda b: b.decode("latin-1")))  # a header's bytes
@example(location="http://[::1")
@example(location="http://a]b:80/")
@example(location="//[")
def test_no_redirect_location_gives_a_5xx(client, location):
    hop = f"http://8.8.8.8/r/{quote(location, safe='', encoding='latin-1')}"
    response = client.post("/predict", json={"urls": [hop, "http://8.8.8.8/image.png"]})
    answered(response, 2)
    assert response.json()["results"][1]["reason"] == ""


def part(name, filename, content_type, data):
    disposition = f'form-data; name="{name}"' + (
        "" if filename is None else f'; filename="{filename}"'
    )
    head = f"Content-Disposition: {disposition}\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode("latin-1", "replace") + b"\r\n" + data


images = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda n: png()[:n], st.integers(0, 400)),  # truncated anywhere
    st.just(png()),
)
parts = st.builds(
    part,
    st.sampled_from(["files", "file", "", "files\r\nX: y"]),
    st.none() | st.text(max_size=10),
    st.none() | st.sampled_from(["image/png", "text/plain", ""]),
    images,
)


@PROPERTY
@given(
    boundary=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20),
    body_parts=st.lists(parts, max_size=5),
    ending=st.sampled_from(["--\r\n", "--", "", "\r\n"]),
    garbage=st.binary(max_size=40),
)
def test_no_multipart_body_gives_a_5xx(client, boundary, body_parts, ending, garbage):
    delimiter = f"--{boundary}".encode("latin-1")
    body = b"".join(delimiter + b"\r\n" + p + b"\r\n" for p in body_parts)
    body = garbage + body + delimiter + ending.encode()
    headers = {"Content-Type": f'multipart/form-data; boundary="{boundary}"'}
    response = client.post("/predict", content=body, headers=headers)
    assert response.status_code < 500, response.text


@PROPERTY
@given(content_type=st.text(max_size=60), body=st.binary(max_size=100))
@example(content_type="multipart/form-data", body=b"x")
@example(content_type="multipart/form-data; boundary=", body=b"--\r\n")
def test_no_content_type_gives_a_5xx(client, content_type, body):
    with contextlib.suppress(UnicodeEncodeError):  # the client cannot send such a header
        response = client.post("/predict", content=body, headers={"Content-Type": content_type})
        assert response.status_code < 500, response.text
