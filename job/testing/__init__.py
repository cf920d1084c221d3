"""Local stand-ins for AWS and the Hub, shipped with the code for tests, benchmarks and the drill."""
