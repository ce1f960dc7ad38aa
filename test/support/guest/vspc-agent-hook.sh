# /etc/vspc-init.d/50-vspc-agent.sh in the 'agent' test guest variant (sourced by the
# guest's /init; see test/agent/guest-agent.test.ts for how the variant is built):
#
#   build-guest.sh --variant agent \
#     --add-bin .cache/agent/vspc-agent:/usr/local/sbin/vspc-agent \
#     --add packaging/vspc-agent.init:/etc/init.d/vspc-agent \
#     --add test/support/guest/vspc-agent-hook.sh:/etc/vspc-init.d/50-vspc-agent.sh
#
# Driven by the kernel command line (startGuest({ append: ... })), so one variant
# serves every test (and a later variant adding dropbear can reuse this hook):
#   vspc.agent=/dev/ttyS1      start the agent on that device (absent: no agent)
#   vspc.allow=7,9,19,22       its allow list (default 22)
#   vspc.agent_opts=-v         extra agent options (commas become spaces: -v,-v)
#   vspc.services=1            start busybox test services on 127.0.0.1:
#                                7  echo (nc -e cat)
#                                9  sha256sum of what it got, once the client ends
#                                19 `seq 1 50000` then end (a known byte stream)
# The agent runs under packaging/vspc-agent.init (restarted if it dies), logging to
# /var/log/vspc-agent.log.
vspc_agent_dev=
vspc_agent_allow=22
vspc_agent_opts=
vspc_services=
for vspc_arg in $(cat /proc/cmdline); do
  case "$vspc_arg" in
    vspc.agent=*) vspc_agent_dev=${vspc_arg#*=} ;;
    vspc.allow=*) vspc_agent_allow=${vspc_arg#*=} ;;
    vspc.agent_opts=*) vspc_agent_opts=$(echo "${vspc_arg#*=}" | tr , ' ') ;;
    vspc.services=*) vspc_services=${vspc_arg#*=} ;;
  esac
done
if [ -n "$vspc_services" ]; then
  nc -ll -p 7 -e cat </dev/null >/dev/null 2>&1 &
  nc -ll -p 9 -e sha256sum </dev/null >/dev/null 2>&1 &
  nc -ll -p 19 -e seq 1 50000 </dev/null >/dev/null 2>&1 &
fi
if [ -n "$vspc_agent_dev" ]; then
  mkdir -p /var/log
  VSPC_AGENT_DEVICE=$vspc_agent_dev VSPC_AGENT_ALLOW=$vspc_agent_allow VSPC_AGENT_OPTS=$vspc_agent_opts \
    /bin/sh /etc/init.d/vspc-agent start >/dev/ttyS0 2>&1
fi
unset vspc_arg vspc_agent_dev vspc_agent_allow vspc_agent_opts vspc_services
