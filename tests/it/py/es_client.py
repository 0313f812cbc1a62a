"""The official Elasticsearch Python client against nightowl, unmodified.

Usage: es_client.py URL CA_FILE AGENT_TOKEN
Prints one JSON object with what the client saw; the Rust test asserts on it.
"""
import json
import sys
import time

from elasticsearch import AuthenticationException, Elasticsearch, helpers

url, ca, token = sys.argv[1:4]
out = {}
stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())


def docs(first, n):
    for i in range(first, first + n):
        path = "/esclient/%d" % i
        if i == 7:
            path += "?password=Es7ClientPassw0rd"
        yield {
            "_index": "web",
            "_source": {
                "message": '10.9.0.%d - - [%s] "GET %s HTTP/1.1" 200 10 "-" "curl/8"' % (i % 250, stamp, path),
                "host": {"name": "web1"},
                "log": {"file": {"path": "/var/log/nginx/access.log"}},
            },
        }


es = Elasticsearch(url, ca_certs=ca, bearer_auth=token, request_timeout=30)
info = es.info()
out["info"] = {"number": info["version"]["number"], "tagline": info["tagline"]}
out["ping"] = es.ping()
out["health"] = es.cluster.health()["status"]
out["license"] = es.license.get()["license"]["status"]

# helpers.bulk sends PUT /_bulk with the compatible-with=8 media types.
ok, errors = helpers.bulk(es, docs(0, 100), raise_on_error=False)
# The same through a client that gzips its bodies.
gz = Elasticsearch(url, ca_certs=ca, bearer_auth=token, request_timeout=30, http_compress=True)
ok2, errors2 = helpers.bulk(gz, docs(100, 100), raise_on_error=False)
# Logs are append-only: updates and deletes get a per-item error, and do not
# stop the good items around them.
ok3, errors3 = helpers.bulk(
    es,
    [
        {"_op_type": "update", "_index": "web", "_id": "x", "doc": {"a": 1}},
        {"_index": "web", "_source": {"message": "esclient mixed batch survivor"}},
        {"_op_type": "delete", "_index": "web", "_id": "y"},
    ],
    raise_on_error=False,
)
out["bulk"] = {"ok": ok + ok2, "errors": len(errors) + len(errors2)}
out["mixed"] = {
    "ok": ok3,
    "statuses": sorted(next(iter(e.values()))["status"] for e in errors3),
    "reasons": sorted(next(iter(e.values()))["error"]["reason"] for e in errors3),
}
res = es.index(index="web", document={"message": "esclient single document", "host": {"name": "web2"}})
out["index"] = res["result"]

try:
    Elasticsearch(url, ca_certs=ca, bearer_auth="nwl_not_a_token", request_timeout=30).info()
    out["bad_token"] = "accepted"
except AuthenticationException as e:
    out["bad_token"] = e.meta.status
print(json.dumps(out))
