#!/bin/sh
# Makes a self-signed certificate and key for trying telnets:// out.
# Usage: certs/make-self-signed.sh [OUT_DIR] [HOSTNAME]
# Writes OUT_DIR/vspc.crt and OUT_DIR/vspc.key (default OUT_DIR: the certs/ folder).
# For production use a certificate from your CA: see certs/README.md.
set -eu
out=${1:-$(dirname "$0")}
name=${2:-$(hostname -f 2>/dev/null || hostname)}
command -v openssl >/dev/null 2>&1 || { echo "make-self-signed.sh: openssl is required (apt-get install openssl)" >&2; exit 1; }
# An address given as the name goes into the certificate as an IP entry, not a DNS one.
case "$name" in
  *:*|*[!0-9.]*) kind=DNS ;;
  *) kind=IP ;;
esac
case "$name" in *:*) kind=IP ;; esac
san="$kind:$name,DNS:localhost,IP:127.0.0.1,IP:::1"
mkdir -p "$out"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 -nodes \
  -days 825 -subj "/CN=$name" \
  -addext "subjectAltName=$san" \
  -addext "basicConstraints=critical,CA:FALSE" \
  -addext "extendedKeyUsage=serverAuth" \
  -keyout "$out/vspc.key" -out "$out/vspc.crt" 2>/dev/null
chmod 644 "$out/vspc.crt"
echo "wrote $out/vspc.crt and $out/vspc.key (CN=$name, valid 825 days)"
