"""The BudgetNet agent: policy network (image + budget -> which components run)."""

from budget_edge.agent.policy import PolicyNet, build_agent

__all__ = ["PolicyNet", "build_agent"]
