"""Parse a Prometheus text exposition from stdin with the reference Python parser
(prometheus_client) and print its samples as JSON lines: [name, labels, value]."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        print(json.dumps([s.name, s.labels, s.value]))
