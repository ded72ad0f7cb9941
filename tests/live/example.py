"""A complete live-session client (Python `websockets`): README, "Live sessions (WebSocket)".

usage: python example.py http://127.0.0.1:8080 <websocket api key> <license key>
"""
import asyncio
import itertools
import json
import sys
import urllib.request

import websockets

EVENT_ID = 2**64 - 1


async def main(base: str, api_key: str, license_key: str) -> None:
    # 0. The balancer names the endpoint (clients may also connect to <host>/ws directly).
    with urllib.request.urlopen(f"{base}/v1/websocket/server") as answer:
        endpoint = json.load(answer)["endpoint"]
    ids = itertools.count(1)

    async with websockets.connect(endpoint) as ws:
        resume_id = ws.response.headers["Resume-Id"]  # send it back as a header to resume

        async def call(packet_type: int, **fields) -> dict:
            packet_id = next(ids)
            await ws.send(json.dumps({"type": packet_type, "id": packet_id, **fields}))
            while True:
                message = json.loads(await ws.recv())
                if message["id"] == EVENT_ID:
                    print("panel event", message)
                elif message["id"] == packet_id:
                    return message

        init = await call(0, websocket_api_key=api_key, client_id="example-machine-01")
        assert init["status"] == 1, init
        print("initialized:", init["app_name"], init["app_version"], "resume id", resume_id[:8] + "...")
        assert (await call(17, subscribed=True))["status"] == 1
        auth = await call(2, license=license_key)
        assert auth["status"] == 1, auth
        print("authorized:", auth["license"], "levels", auth["levels"], "time_left", auth.get("time_left"))
        print("variable motd:", (await call(11, name="motd")).get("content"))
        assert (await call(12, key="theme", value="dark", ttl=3600))["status"] == 1
        print("session value theme:", (await call(13, key="theme"))["value"])
        print("online users:", (await call(10))["online_users_count"])
        print("current license status:", (await call(15))["status"])
        assert (await call(5))["status"] == 1
        print("logged out; closing with 1000")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
