"""py-sonic (the `libsonic` client library) against a running Omega node.

Run by node/tests/clients.rs with OMEGA_PORT, OMEGA_USER, OMEGA_APP_PASSWORD
and OMEGA_TRACK_FILE (the first track's file) in the environment. Prints one
line per check; exits non-zero on the first failure.
"""

import hashlib
import os
import sys

import libsonic

port = int(os.environ["OMEGA_PORT"])
user = os.environ["OMEGA_USER"]
password = os.environ["OMEGA_APP_PASSWORD"]
track_file = os.environ["OMEGA_TRACK_FILE"]


def check(condition, what):
    if not condition:
        print(f"FAIL {what}")
        sys.exit(1)
    print(f"ok   {what}")


# Token auth (t = md5(password + s)), as current clients sign in.
sonic = libsonic.Connection("http://127.0.0.1", user, password, port=port, appName="omega-test")
check(sonic.ping(), "ping with a salted token")

folders = sonic.getMusicFolders()["musicFolders"]["musicFolder"]
check(len(folders) == 1 and folders[0]["name"] == "music", f"getMusicFolders: {folders}")

artists = sonic.getArtists()["artists"]
names = [artist["name"] for index in artists["index"] for artist in index["artist"]]
check(names == ["Test Artist"], f"getArtists: {names}")
artist_id = artists["index"][0]["artist"][0]["id"]

artist = sonic.getArtist(artist_id)["artist"]
check(artist["albumCount"] == 1 and artist["album"][0]["name"] == "Test Album", "getArtist")
album_id = artist["album"][0]["id"]

album = sonic.getAlbum(album_id)["album"]
titles = [song["title"] for song in album["song"]]
check(titles == ["First Tone", "Second Tone"], f"getAlbum tracks in order: {titles}")
check(album["songCount"] == 2 and album["duration"] >= 29, "getAlbum counts and duration")
first = album["song"][0]
check(first["track"] == 1 and first["suffix"] == "mp3" and first["contentType"] == "audio/mpeg", "song fields")

listing = sonic.getAlbumList2("alphabeticalByName")["albumList2"]["album"]
check([a["name"] for a in listing] == ["Test Album"], "getAlbumList2")

with open(track_file, "rb") as handle:
    original = handle.read()
streamed = sonic.stream(first["id"]).read()
check(hashlib.sha256(streamed).digest() == hashlib.sha256(original).digest(), "stream: the bytes of the file")
lower = sonic.stream(first["id"], maxBitRate=64, tformat="mp3").read()
check(len(lower) > 1000 and len(lower) < len(original), f"stream at 64 kb/s: {len(lower)} < {len(original)} bytes")

found = sonic.search3("second")["searchResult3"]
check([song["title"] for song in found.get("song", [])] == ["Second Tone"], "search3")
everything = sonic.search3("")["searchResult3"]
check(len(everything.get("song", [])) == 2, "search3 with an empty query lists everything")

sonic.scrobble(first["id"], submission=True)
again = sonic.getSong(first["id"])["song"]
check(again.get("playCount") == 1, f"scrobble counts a play: {again.get('playCount')}")

sonic.star(sids=[first["id"]])
starred = sonic.getStarred2()["starred2"]
check([song["id"] for song in starred.get("song", [])] == [first["id"]], "star then getStarred2")
sonic.unstar(sids=[first["id"]])
check(not sonic.getStarred2()["starred2"].get("song"), "unstar")

songs = [song["id"] for song in album["song"]]
created = sonic.createPlaylist(name="Road trip", songIds=songs + [songs[0]])["playlist"]
check(created["songCount"] == 3 and created["owner"] == user, f"createPlaylist: {created}")
listed = sonic.getPlaylists()["playlists"]["playlist"]
check([entry["name"] for entry in listed] == ["Road trip"], "getPlaylists")
sonic.updatePlaylist(created["id"], name="Road trip 2", songIndexesToRemove=[2])
entries = sonic.getPlaylist(created["id"])["playlist"]
check(entries["name"] == "Road trip 2" and [e["id"] for e in entries["entry"]] == songs, "updatePlaylist")
print(f"playlist {created['id']}")

cover = album.get("coverArt")
if cover:
    image = sonic.getCoverArt(cover).read()
    check(image[:2] == b"\xff\xd8", "getCoverArt: a JPEG")

# The legacy forms: p= plain and p=enc:hex.
legacy = libsonic.Connection(
    "http://127.0.0.1", user, password, port=port, appName="omega-test", legacyAuth=True
)
check(legacy.ping(), "ping with p=enc:")

# A wrong password is error 40, in the envelope.
wrong = libsonic.Connection("http://127.0.0.1", user, "not-the-password", port=port)
try:
    wrong.getArtists()
    check(False, "a wrong password is refused")
except libsonic.errors.CredentialError:
    check(True, "a wrong password is refused with error 40")
print("subsonic: all checks passed")
