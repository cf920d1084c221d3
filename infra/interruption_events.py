"""Interruption events: EventBridge records spot interruption warnings and rebalance recommendations in a log
group, so an interruption is on record even when the instance dies before it can write anything."""
from __future__ import annotations

from aws_cdk import ArnFormat, Aws, RemovalPolicy, Stack, aws_events as events, aws_iam as iam, aws_logs as logs
from constructs import Construct

DETAIL_TYPES = ["EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance Recommendation"]


class InterruptionEvents(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(
            self, "Logs",
            # EventBridge delivers only to log groups under /aws/events/.
            log_group_name=f"/aws/events/{Aws.STACK_NAME}/spot-interruptions",
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=RemovalPolicy.DESTROY,
        )
        log_group_arn = Stack.of(self).format_arn(service="logs", resource="log-group",
                                                  resource_name=self.log_group.log_group_name,
                                                  arn_format=ArnFormat.COLON_RESOURCE_NAME)
        # L1 rule + a native AWS::Logs::ResourcePolicy: the L2 CloudWatchLogGroup target would add a custom
        # resource Lambda (with a wildcard policy) just to write the same resource policy.
        self.rule = events.CfnRule(
            self, "Rule",
            description="Spot interruption warnings and rebalance recommendations, kept as records",
            event_pattern={"source": ["aws.ec2"], "detail-type": DETAIL_TYPES},
            state="ENABLED",
            targets=[events.CfnRule.TargetProperty(id="InterruptionLog", arn=log_group_arn)],
        )
        self.log_group.add_to_resource_policy(iam.PolicyStatement(
            sid="EventBridgeDelivery",
            principals=[iam.ServicePrincipal("events.amazonaws.com"), iam.ServicePrincipal("delivery.logs.amazonaws.com")],
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[self.log_group.log_group_arn],
            conditions={"ArnEquals": {"aws:SourceArn": self.rule.attr_arn}},
        ))
