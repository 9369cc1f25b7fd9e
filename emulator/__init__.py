"""An in-process Kubernetes API server emulator, held to a real server's recorded answers.

`Emulator` (server.py) serves core v1 (pods with binding and status, nodes, namespaces,
services, events, service accounts, config maps), events.k8s.io/v1, coordination.k8s.io/v1
leases, resource.k8s.io/v1 DRA types, scheduling.k8s.io/v1alpha2 PodGroups and Workloads,
scheduling.k8s.io/v1 PriorityClasses, CustomResourceDefinitions with their custom
resources, Secrets, and admission webhook configurations whose webhooks it calls like an
API server (admission.py), over real HTTP(S) with a bearer token, so kubectl and
kubernetes-asyncio talk to it unchanged.

tests/kube/test_transcripts.py replays 220 exchanges recorded from a Kubernetes 1.36.2
API server against it: 218 match; GAPS.md lists the two that do not, and every other
known difference. Test hooks (faults, fail-stop, watch-window eviction, compaction,
restart, an audit of every request's authorization attributes) are methods of
`Emulator`, never HTTP routes. With `controllers=True` it runs the controller-manager's
controllers clients rely on (controllers.py); kubelet.py simulates the kubelets of nodes
over the API; bench.py is `phalanx bench emulator`.
"""

from emulator.faults import Fault
from emulator.server import Emulator

__all__ = ["Emulator", "Fault"]
