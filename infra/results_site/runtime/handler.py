"""Placeholder: replaced by the results-page handler (issue 7)."""


def handler(event, context):
    return {"statusCode": 200, "headers": {"content-type": "text/html"}, "body": "<h1>runs</h1>"}
