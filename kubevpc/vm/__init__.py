"""A VM that kubevpc builds for itself, and the end-to-end run in it on Open vSwitch's kernel
datapath (`make vm`, `make vm-test`, `python -m kubevpc.vm`).

The image is Debian 12 debootstrapped from the Debian package registry the machine's apt already
uses (sources.py), its packages and the project's own virtual environment put in from a chroot,
then booted once so that scripts/install.sh provisions it as on any machine (recipe.py, image.py).
qemu boots it on KVM when a tiny test boot shows that KVM works, and on software emulation (TCG)
otherwise (qemu.py). The host talks to the guest through two 9p shares: the checkout (read-only)
and a job directory, where the host leaves a script and the guest leaves its output (suite.py).
Everything a session makes is recorded in a run's ledger (session.py), so `kubevpc clean` and
`python -m kubevpc.vm clean` remove what a crashed session left.
"""
