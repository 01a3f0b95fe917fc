#!/usr/bin/env python3
"""Prints the Go source packages (golang-*-dev, Architecture: all) that ROOT needs, from a
Debian Packages index on stdin: the transitive closure of Depends, first alternative, through
Provides. Anything else (C libraries, tools) is skipped: a GOPATH build needs only Go source."""
import sys

def stanzas(text):
    for block in text.split("\n\n"):
        fields, key = {}, None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields:
            yield fields

def names(field):
    for group in filter(None, (g.strip() for g in field.split(","))):
        yield group.split("|")[0].split("(")[0].split("[")[0].split(":")[0].strip()

packages, provided = {}, {}
for fields in stanzas(sys.stdin.read()):
    packages[fields["Package"]] = fields
    for name in names(fields.get("Provides", "")):
        provided.setdefault(name, fields["Package"])

def is_go_source(fields):
    return fields.get("Architecture") == "all" and fields["Package"].endswith("-dev") and \
        fields["Package"].startswith("golang-")

seen, todo = set(), list(sys.argv[1:])
while todo:
    name = todo.pop()
    name = name if name in packages else provided.get(name, name)
    if name in seen or name not in packages or not is_go_source(packages[name]):
        continue
    seen.add(name)
    todo.extend(names(packages[name].get("Depends", "")))
print("\n".join(sorted(seen)))
