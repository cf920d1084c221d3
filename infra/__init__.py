"""The CDK app's constructs: one stack composed of one construct per concern."""
