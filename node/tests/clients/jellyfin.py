"""jellyfin-apiclient-python (the Jellyfin client library) against Omega.

Run by node/tests/clients.rs with OMEGA_PORT, OMEGA_USER, OMEGA_PASSWORD and
OMEGA_FILM (the film's file). Prints the item id it reported progress on as
the last line (`progress-item <hex id>`); exits non-zero on a failure.
"""

import hashlib
import os
import sys

import requests
from jellyfin_apiclient_python import JellyfinClient
from jellyfin_apiclient_python.connection_manager import CONNECTION_STATE

url = f"http://127.0.0.1:{os.environ['OMEGA_PORT']}"


def check(condition, what):
    if not condition:
        print(f"FAIL {what}")
        sys.exit(1)
    print(f"ok   {what}")


client = JellyfinClient()
client.config.app("omega-test", "1.0.0", "test machine", "device-1234")
client.config.data["auth.ssl"] = False
state = client.auth.connect_to_address(url)
check(state.get("State") == CONNECTION_STATE["ServerSignIn"], f"connect_to_address: {state.get('State')}")
public = requests.get(f"{url}/system/info/public").json()
login = client.auth.login(url, os.environ["OMEGA_USER"], os.environ["OMEGA_PASSWORD"])
check(login.get("AccessToken"), "AuthenticateByName gives a token")
check(login["ServerId"] == public["Id"], "the ServerId is /System/Info/Public's Id")
check(len(login["User"]["Id"]) == 32, "32-hex user id")

views = client.jellyfin.get_views()["Items"]
check([view["CollectionType"] for view in views] == ["movies"], f"views: {views}")

films = client.jellyfin.user_items(params={
    "ParentId": views[0]["Id"], "Recursive": True, "IncludeItemTypes": "Movie",
})["Items"]
check([film["Name"] for film in films] == ["Test Film"], f"items: {films}")
film_id = films[0]["Id"]
check(films[0]["RunTimeTicks"] >= 19 * 10_000_000, "ticks of 100 ns")

item = client.jellyfin.get_item(film_id)
check(item["Type"] == "Movie" and item["ProductionYear"] == 2024, "get_item")
check("Primary" in item.get("ImageTags", {}), "an image tag")

tag = item["ImageTags"]["Primary"]
image = requests.get(f"{url}/Items/{film_id}/Images/Primary", params={"tag": tag})
check(image.status_code == 200 and image.content[:2] == b"\xff\xd8", "an image with its tag needs no token")
denied = requests.get(f"{url}/Items/{film_id}/Images/Primary", params={"tag": "0" * 32})
check(denied.status_code == 401, "an image with a wrong tag and no token is refused")

info = client.jellyfin.get_play_info(film_id)
source = info["MediaSources"][0]
check(source["Container"] == "mkv" and source["SupportsTranscoding"], "PlaybackInfo")
check("TranscodingUrl" in source, "a browser-like client gets an HLS URL for Matroska")

download = requests.get(client.jellyfin.download_url(film_id))
with open(os.environ["OMEGA_FILM"], "rb") as handle:
    original = handle.read()
check(hashlib.sha256(download.content).digest() == hashlib.sha256(original).digest(), "download: the file's bytes")
stream = requests.get(client.jellyfin.video_url(film_id))
check(stream.status_code == 200 and stream.content == original, "static video stream: the file's bytes")

hls = requests.get(f"{url}{source['TranscodingUrl']}")
check(hls.status_code == 200 and hls.text.startswith("#EXTM3U"), "the transcoding URL is an HLS master playlist")

client.jellyfin.session_playing({"ItemId": film_id, "PositionTicks": 0})
client.jellyfin.session_progress({"ItemId": film_id, "PositionTicks": 73_000_000})
client.jellyfin.session_stop({"ItemId": film_id, "PositionTicks": 73_000_000})
resumed = client.jellyfin.get_item(film_id)["UserData"]
check(resumed["PlaybackPositionTicks"] == 73_000_000, f"resume position: {resumed}")
resume_list = client.jellyfin.user_items("/Resume")["Items"]
check([entry["Id"] for entry in resume_list] == [film_id], "the resume list")

latest = client.jellyfin.get_recently_added()
check([entry["Name"] for entry in latest] == ["Test Film"], "Items/Latest is a bare list")

client.jellyfin.favorite(film_id, True)
check(client.jellyfin.get_item(film_id)["UserData"]["IsFavorite"], "a favourite mark")
print(f"progress-item {film_id}")
