# /etc/vspc-init.d/60-dropbear.sh in the 'tunnel-ssh' test guest variant (sourced by
# the guest's /init after 50-vspc-agent.sh; see test/support/tunnel-guest.ts for how the
# variant is built): an SSH server on 127.0.0.1:22 only, reachable from the host through
# the serial tunnel and nothing else.
#
# Driven by the kernel command line (startGuest({ append: ... })):
#   vspc.sshkey=BLOB   root's authorized key: the base64 blob of an ssh-ed25519 public
#                      key (the test makes one per run); absent: no dropbear
# Host keys are made at the first connection (dropbear -R), so every boot has its own.
# dropbear logs to /var/log/dropbear.log; its pid is in /run/dropbear.pid.
vspc_sshkey=
for vspc_arg in $(cat /proc/cmdline); do
  case "$vspc_arg" in
    vspc.sshkey=*) vspc_sshkey=${vspc_arg#*=} ;;
  esac
done
if [ -n "$vspc_sshkey" ]; then
  mkdir -p /root/.ssh /etc/dropbear /var/log
  chmod 700 /root /root/.ssh
  echo "ssh-ed25519 $vspc_sshkey vspc-tunnel-test" >/root/.ssh/authorized_keys
  chmod 600 /root/.ssh/authorized_keys
  # -F -E: foreground, log to stderr (no syslog here); -R: host keys as needed;
  # -s: keys only; -p: loopback only.
  dropbear -F -E -R -s -p 127.0.0.1:22 >/var/log/dropbear.log 2>&1 &
  echo $! >/run/dropbear.pid
fi
unset vspc_arg vspc_sshkey
