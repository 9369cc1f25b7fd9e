"""`phalanx replay`: a scenario run live, through the real controller, on an API server.

The same scenario files `phalanx simulate` reads become API objects (plan.py): the
cluster's nodes (registered and run by the simulated kubelets of `emulator/kubelet.py`),
their ResourceSlices, the `gpu` DeviceClass, a namespace per leaf queue and the Queues
(each selecting its namespace), and one GangJob per job, created on the scenario's clock.
The controller runs in the same process (or is already running: `--external-controller`),
a watcher (record.py) notes when every GangJob was admitted, bound, finished or
released, and the run's figures come from what it saw, never from the simulator.

Time: the replay runs on the event loop's clock, `speed` times faster than the
scenario's. A scenario instant `t` is loop time `t0 + t / speed`, where `t0` is the moment
the controller's caches are in sync (jobs due at 0 are created just before, so its first
cycle sees them all, as the simulator's first cycle does). Everything handed to the
cluster is divided by `speed`: job durations (the pods' run time, an annotation the
simulated kubelets honour), runtime estimates, minimum runtimes, checkpoint intervals,
the controller's least time between cycles (`cycleInterval`), node outages. Everything
observed is multiplied back: figures are in scenario seconds. API and watch latency
are not divided: at 600x a 5 ms write is 3 scenario seconds, which is what
`phalanx bench replay` measures. On looptime (the tests) the loop clock is virtual and
requests take no time, so only the decisions are compared.
"""
