"""Cost guard: a monthly AWS Budgets cost budget that emails the operator (only when budget_email is given)."""
from __future__ import annotations

from aws_cdk import aws_budgets as budgets
from constructs import Construct


class CostGuard(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, email: str, monthly_usd: float) -> None:
        super().__init__(scope, construct_id)
        subscribers = [budgets.CfnBudget.SubscriberProperty(subscription_type="EMAIL", address=email)]

        def alert(kind: str, percent: float) -> budgets.CfnBudget.NotificationWithSubscribersProperty:
            return budgets.CfnBudget.NotificationWithSubscribersProperty(
                notification=budgets.CfnBudget.NotificationProperty(
                    notification_type=kind, comparison_operator="GREATER_THAN", threshold=percent,
                    threshold_type="PERCENTAGE"),
                subscribers=subscribers)

        self.budget = budgets.CfnBudget(
            self, "Budget",
            budget=budgets.CfnBudget.BudgetDataProperty(
                budget_type="COST", time_unit="MONTHLY",
                budget_limit=budgets.CfnBudget.SpendProperty(amount=monthly_usd, unit="USD")),
            # Forecast first: a forgotten instance is caught before the money is spent.
            notifications_with_subscribers=[alert("FORECASTED", 100), alert("ACTUAL", 80), alert("ACTUAL", 100)],
        )
