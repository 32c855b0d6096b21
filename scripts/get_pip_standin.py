"""Stand-in for the pip bootstrap script ansible-test downloads (this machine cannot reach its host).

ansible-test runs it as `python get_pip_<ver>.py <pip install args>`: bootstrap pip with
ensurepip, then install what was asked. ensurepip points PIP_CONFIG_FILE at /dev/null,
which would drop the machine's pip settings (certificates, mirrors), so it is removed.
"""
import os
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
env = dict(os.environ)
env.pop("PIP_CONFIG_FILE", None)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
if args:
    sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check"] + args, env=env))
