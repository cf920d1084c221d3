"""The results page: reads run records from S3 and renders them (Lambda function URL and static files).

This folder is deployed alone as the Lambda bundle, where its modules are imported top-level (`import
handler`); the launcher and the tests import it as the package `infra.results_site.runtime`. Every module
therefore imports its siblings through `if __package__:` (relative) / `else:` (top-level), and nothing
outside the standard library and boto3.
"""
