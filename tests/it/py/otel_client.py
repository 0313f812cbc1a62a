"""The official OpenTelemetry Python SDK with its OTLP/HTTP log exporter.

Usage: otel_client.py ENDPOINT CA_FILE AGENT_TOKEN COMPRESSION(none|gzip)
Sends 50 records through Python's logging; prints "sent" once flushed.
"""
import logging
import sys

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

endpoint, ca, token, compression = sys.argv[1:5]
provider = LoggerProvider(resource=Resource.create({"service.name": "checkout", "host.name": "app1"}))
exporter = OTLPLogExporter(
    endpoint=endpoint,
    headers={"Authorization": "Bearer " + token},
    certificate_file=ca,
    timeout=30,
    compression=Compression.Gzip if compression == "gzip" else Compression.NoCompression,
)
provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
log = logging.getLogger("otelclient")
log.addHandler(LoggingHandler(logger_provider=provider))
log.setLevel(logging.INFO)
log.propagate = False
for i in range(50):
    extra = {"order_id": i, "http.response.status_code": 502 if i % 10 == 0 else 200}
    if i == 3:
        extra["db.password"] = "Otlp5ecretPassw0rd"
    level = logging.ERROR if i % 10 == 0 else logging.INFO
    log.log(level, "otlpclient %s order %d failed to settle", compression, i, extra=extra)
ok = provider.force_flush(30_000)
provider.shutdown()
print("sent" if ok else "flush failed")
