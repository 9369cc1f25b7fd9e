"""Pydantic models of Phalanx's custom resources and the CRD manifests generated from them."""

from controller.api.common import API_VERSION, GROUP, VERSION, LabelSelector, parse_quantity
from controller.api.errors import FieldProblem, format_validation_error
from controller.api.gangjob import GangJob, GangJobSpec, GangJobStatus
from controller.api.policies import QueuePolicyError, queue_policy_selection
from controller.api.queue import Queue, QueueSpec, QueueStatus, QueueTreeError, validate_queue_tree

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "FieldProblem",
    "GangJob",
    "GangJobSpec",
    "GangJobStatus",
    "LabelSelector",
    "Queue",
    "QueuePolicyError",
    "QueueSpec",
    "QueueStatus",
    "QueueTreeError",
    "format_validation_error",
    "parse_quantity",
    "queue_policy_selection",
    "validate_queue_tree",
]
