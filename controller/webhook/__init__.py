"""Phalanx's admission webhook: served by every `phalanx controller` replica (port 9443,
Service `phalanx-webhook`), or alone by `phalanx webhook`.

- review.py: AdmissionReview v1 in and out; refusals as Kubernetes field errors.
- gangjob.py, queue.py: validation beyond the CRD schema (queue exists, is a leaf and
  takes the namespace; claim templates and DeviceClasses exist; the job can ever fit;
  the queue tree stays a tree).
- pods.py: cluster-level quota: GPU and DRA pods in managed namespaces become one-pod
  gangs charged to the namespace's queue; bypasses are refused with how to submit.
- configs.py: the webhook configurations, and the failurePolicy chosen for each and why.
- certs.py: a self-signed CA and serving certificate in a Secret, renewed before expiry,
  caBundle patched (unless cert-manager manages them).
- server.py: HTTPS serving, certificates reloaded without a restart.
- cluster.py, run.py: the cluster the rules read, and the wiring.
The rule modules are pure functions of a request and a `Cluster`; only server.py,
certs.py and run.py do I/O.
"""
