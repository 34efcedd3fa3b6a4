"""feedparser (what many OPDS tools parse feeds with) against Omega's /opds.

Run by node/tests/clients.rs with OMEGA_PORT, OMEGA_USER, OMEGA_APP_PASSWORD
and OMEGA_EPUB (the EPUB's path). Exits non-zero on the first failure.
"""

import base64
import hashlib
import os
import sys
import urllib.error
import urllib.request

import feedparser

base = f"http://127.0.0.1:{os.environ['OMEGA_PORT']}"
credentials = base64.b64encode(
    f"{os.environ['OMEGA_USER']}:{os.environ['OMEGA_APP_PASSWORD']}".encode()
).decode()
headers = {"Authorization": f"Basic {credentials}"}


def check(condition, what):
    if not condition:
        print(f"FAIL {what}")
        sys.exit(1)
    print(f"ok   {what}")


def get(path, with_auth=True):
    request = urllib.request.Request(base + path, headers=headers if with_auth else {})
    with urllib.request.urlopen(request) as response:
        return response.read(), response.headers


def feed(path):
    body, _ = get(path)
    parsed = feedparser.parse(body)
    check(not parsed.bozo, f"{path} is well-formed Atom")
    return parsed


try:
    get("/opds", with_auth=False)
    check(False, "no credentials is refused")
except urllib.error.HTTPError as error:
    check(error.code == 401 and "Basic" in error.headers.get("WWW-Authenticate", ""), "401 with a Basic challenge")

root = feed("/opds")
titles = [entry.title for entry in root.entries]
check(titles == ["All books", "Recently added", "Authors", "Series"], f"navigation root: {titles}")
search_links = [link for link in root.feed.links if link.rel == "search"]
check(search_links and search_links[0].href == "/opds/osd", "root links OpenSearch")

books = feed("/opds/books")
names = sorted(entry.title for entry in books.entries)
check(names == ["A Field Guide to Clouds", "Chapter One", "Le Petit Prince"], f"books feed: {names}")
prince = next(entry for entry in books.entries if entry.title == "Le Petit Prince")
check(prince.author == "Antoine de Saint-Exupery", "author")
acquisitions = [link for link in prince.links if link.rel == "http://opds-spec.org/acquisition"]
check(len(acquisitions) == 1 and acquisitions[0].type == "application/epub+zip", "one EPUB acquisition link")

osd, _ = get("/opds/osd")
check(b"/opds/search?q={searchTerms}" in osd, "OpenSearch template")
found = feed("/opds/search?q=prince")
check([entry.title for entry in found.entries] == ["Le Petit Prince"], "search by title")
by_author = feed("/opds/search?q=weather")
check([entry.title for entry in by_author.entries] == ["A Field Guide to Clouds"], "search by author")

series = feed("/opds/series")
check([entry.title for entry in series.entries] == ["Saga"], "series navigation")
saga = feed(series.entries[0].links[0].href)
check([entry.title for entry in saga.entries] == ["Chapter One"], "a series' books")
authors = feed("/opds/authors")
check(len(authors.entries) == 3, "authors navigation")

downloaded, download_headers = get(acquisitions[0].href)
with open(os.environ["OMEGA_EPUB"], "rb") as handle:
    original = handle.read()
check(hashlib.sha256(downloaded).digest() == hashlib.sha256(original).digest(), "the EPUB downloaded is the file")
check("petit-prince.epub" in download_headers.get("Content-Disposition", ""), "named for the reader")
print("opds: all checks passed")
