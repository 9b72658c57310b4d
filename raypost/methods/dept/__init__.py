"""DePT (Decomposed Prompt Tuning, Shi & Lipani, ICLR 2024) in pure PyTorch; see docs/dept.md."""

from raypost.methods.dept.budget import dept_param_count, rank_for_budget
from raypost.methods.dept.config import READOUTS, DeptConfig, check_readout
from raypost.methods.dept.model import DeptModel

__all__ = ["READOUTS", "check_readout", "DeptConfig", "DeptModel", "dept_param_count", "rank_for_budget"]
