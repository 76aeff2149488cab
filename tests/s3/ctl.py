"""Look into and steer the S3 test server from bats, as another client would (boto3, direct).

    python tests/s3/ctl.py URL mkbucket BUCKET
    python tests/s3/ctl.py URL listing BUCKET [PREFIX]   # {key: size} of every object, sorted, JSON
    python tests/s3/ctl.py URL get BUCKET KEY FILE
    python tests/s3/ctl.py URL put BUCKET KEY FILE
    python tests/s3/ctl.py URL uploads BUCKET            # the unfinished multipart uploads' keys
    python tests/s3/ctl.py URL fault JSON | clear | release | stats   # the proxy (s3server.py)
"""

from __future__ import annotations

import json
import sys
import urllib.request


def client(url: str):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing",
                        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}))


def control(url: str, path: str, method: str, body: str | None = None) -> str:
    request = urllib.request.Request(url + path, method=method, data=None if body is None else body.encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as answer:
        return answer.read().decode()


def main(argv: list[str]) -> int:
    url, command, *args = argv
    if command == "mkbucket":
        client(url).create_bucket(Bucket=args[0])
    elif command == "listing":
        found = {}
        pages = client(url).get_paginator("list_objects_v2").paginate(Bucket=args[0], Prefix=args[1] if len(args) > 1 else "")
        for page in pages:
            found.update({item["Key"]: item["Size"] for item in page.get("Contents", ())})
        print(json.dumps(dict(sorted(found.items())), indent=1))
    elif command == "get":
        client(url).download_file(args[0], args[1], args[2])
    elif command == "put":
        with open(args[2], "rb") as handle:
            client(url).put_object(Bucket=args[0], Key=args[1], Body=handle.read())
    elif command == "uploads":
        for item in client(url).list_multipart_uploads(Bucket=args[0]).get("Uploads", ()):
            print(item["Key"])
    elif command == "fault":
        control(url, "/__faults", "POST", args[0])
    elif command == "clear":
        control(url, "/__faults", "DELETE")
    elif command == "release":
        control(url, "/__release", "POST", "{}")
    elif command == "stats":
        print(control(url, "/__stats", "GET"))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
