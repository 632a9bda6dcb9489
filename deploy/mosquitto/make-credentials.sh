#!/usr/bin/env bash
# Makes the secrets for a production ParkGate broker (deploy/mosquitto/mosquitto.conf):
#   - a private CA (kept on the machine that runs this script, never on the broker or a gate),
#   - the broker's TLS key and certificate, signed by that CA, with the given host names and
#     127.0.0.1 as subject alternative names,
#   - one MQTT user and random password per device (each gate id in GATES_FILE, plus the users
#     "collector" and "dashboard"), hashed into a Mosquitto password file with mosquitto_passwd -b,
#     and each password in its own systemd EnvironmentFile (PARKGATE_MQTT_PASSWORD=...).
#
# Usage: make-credentials.sh --out DIR --host NAME [--host NAME]... [--days N] [--env-var NAME] GATES_FILE
#
# GATES_FILE holds one gate id per line ('#' comments and blank lines are ignored). A gate id is
# also its MQTT user name and the topic prefix the ACL confines it to, so it must be unique.
#
# Running it again is safe: the CA, the broker certificate and every existing password are kept;
# new gates get new passwords; the password file is rebuilt from the list, so a gate removed from
# GATES_FILE loses access once the broker reloads (systemctl reload mosquitto). To renew the
# broker certificate, delete DIR/broker/server.crt and run again; to change a password, delete
# DIR/devices/ID.env and run again.
#
# mosquitto_passwd -b puts each password on its command line for a moment, where other local users
# could see it (ps): run this on an admin machine that nobody else logs in to.
#
# Output (every secret is mode 600; DIR must not be inside a git work tree):
#   DIR/ca/ca.key, ca.crt                   the CA: keep ca.key offline; ca.crt goes to every client
#   DIR/broker/ca.crt server.crt server.key  copy to /etc/mosquitto/parkgate/ on the broker
#              passwd acl
#   DIR/devices/ID.env                      copy to that device's /etc/parkgate/ (edge.env on a gate,
#                                           collector.env, dashboard.env): the systemd EnvironmentFile
set -euo pipefail
umask 077

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=""
hosts=()
days=825
env_var=PARKGATE_MQTT_PASSWORD
gates_file=""
id_re='^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'   # protocol/topics.py ID_PATTERN
reserved=(collector dashboard)

die() { printf 'make-credentials: %s\n' "$*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p;}' "$0"; exit 0; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out|--host|--days|--env-var) [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value" ;;
  esac
  case "$1" in
    --out) out=$2; shift 2 ;;
    --host) hosts+=("$2"); shift 2 ;;
    --days) days=$2; shift 2 ;;
    --env-var) env_var=$2; shift 2 ;;
    -h|--help) usage ;;
    -*) die "unknown option $1" ;;
    *) [ -z "$gates_file" ] || die "only one GATES_FILE"; gates_file=$1; shift ;;
  esac
done
[ -n "$out" ] || die "--out DIR is required"
[ -n "$gates_file" ] || die "GATES_FILE is required (one gate id per line)"
[ -r "$gates_file" ] || die "cannot read $gates_file"
[ ${#hosts[@]} -gt 0 ] || die "--host NAME is required (the broker's name as clients dial it)"
[[ "$days" =~ ^[0-9]+$ ]] && [ "$days" -gt 0 ] || die "--days must be a positive number"
[[ "$env_var" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "--env-var $env_var is not a variable name"
command -v openssl >/dev/null || die "openssl is not installed (apt-get install openssl)"
passwd_bin=$(command -v mosquitto_passwd || true)
[ -n "$passwd_bin" ] || die "mosquitto_passwd is not installed (apt-get install mosquitto)"

# -- the device list ---------------------------------------------------------------------------
gates=()
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
  lineno=$((lineno + 1))
  id=${line%%#*}
  id=${id#"${id%%[![:space:]]*}"}   # trim leading and trailing blanks only
  id=${id%"${id##*[![:space:]]}"}
  [ -n "$id" ] || continue
  [[ "$id" =~ $id_re ]] || die "$gates_file:$lineno: gate id '$id' must match $id_re"
  for r in "${reserved[@]}"; do
    [ "$id" != "$r" ] || die "$gates_file:$lineno: '$id' is reserved for the $r's own user"
  done
  for g in "${gates[@]}"; do
    [ "$g" != "$id" ] || die "$gates_file:$lineno: gate id '$id' is listed twice"
  done
  gates+=("$id")
done < "$gates_file"
[ ${#gates[@]} -gt 0 ] || die "$gates_file lists no gate ids"

probe=$out
while [ ! -d "$probe" ]; do probe=$(dirname "$probe"); done
if command -v git >/dev/null && git -C "$probe" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  die "$out is inside a git work tree; secrets are never committed: choose a folder outside it"
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)

mkdir -p "$out/ca" "$out/broker" "$out/devices"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

report() { printf '%-10s %-24s %s\n' "$1" "$2" "$3"; }

# -- CA ----------------------------------------------------------------------------------------
newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
if [ ! -s "$out/ca/ca.key" ] || [ ! -s "$out/ca/ca.crt" ]; then
  cat > "$work/ca.cnf" <<CNF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = ParkGate MQTT CA
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
CNF
  openssl req -x509 "${newkey[@]}" -keyout "$out/ca/ca.key" -out "$out/ca/ca.crt" -days 3650 \
    -config "$work/ca.cnf" -extensions v3_ca 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  report created "CA key" "$out/ca/ca.key  (keep offline; it signs broker certificates)"
  rm -f "$out/broker/server.key" "$out/broker/server.crt"   # a new CA needs a new broker certificate
else
  report kept "CA key" "$out/ca/ca.key"
fi
chmod 644 "$out/ca/ca.crt"
cp "$out/ca/ca.crt" "$out/broker/ca.crt"

# -- broker certificate ------------------------------------------------------------------------
if [ ! -s "$out/broker/server.key" ] || [ ! -s "$out/broker/server.crt" ]; then
  san="IP:127.0.0.1"
  for h in "${hosts[@]}"; do
    if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then san="$san,IP:$h"; else san="$san,DNS:$h"; fi
  done
  cat > "$work/server.cnf" <<CNF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = ${hosts[0]}
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
CNF
  openssl req -new "${newkey[@]}" -keyout "$out/broker/server.key" -out "$work/server.csr" \
    -config "$work/server.cnf" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  openssl x509 -req -in "$work/server.csr" -CA "$out/ca/ca.crt" -CAkey "$out/ca/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$days" -extfile "$work/server.cnf" -extensions server \
    -out "$out/broker/server.crt" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  chmod 644 "$out/broker/server.crt"
  report created "broker key" "$out/broker/server.key  (SAN $san)"
else
  report kept "broker key" "$out/broker/server.key"
fi
cp "$here/acl" "$out/broker/acl"
chmod 644 "$out/broker/acl" "$out/broker/ca.crt"

# -- one password per device -------------------------------------------------------------------
password_of() {  # sets pw: from the device's env file, or a new random one written there
  local user=$1 file="$out/devices/$1.env"
  if [ -s "$file" ]; then
    pw=$(sed -n "s/^$env_var=//p" "$file" | head -1)
    [ -n "$pw" ] || die "$file has no $env_var= line; delete it to make a new password"
    report kept "$user" "$file"
  else
    pw=$(openssl rand -hex 24)
    printf '# MQTT password of ParkGate user %s (systemd EnvironmentFile)\n%s=%s\n' "$user" "$env_var" "$pw" > "$file"
    report created "$user" "$file"
  fi
}

rm -f "$out/broker/passwd.new"
: > "$out/broker/passwd.new"
for user in "${reserved[@]}" "${gates[@]}"; do
  password_of "$user"
  "$passwd_bin" -b "$out/broker/passwd.new" "$user" "$pw"
done
mv "$out/broker/passwd.new" "$out/broker/passwd"
report wrote "password file" "$out/broker/passwd  (${#gates[@]} gates, collector, dashboard)"

cat <<TXT

Next:
  broker:  install -o root -g mosquitto -m 640 $out/broker/* /etc/mosquitto/parkgate/
           install -m 644 $here/mosquitto.conf /etc/mosquitto/mosquitto.conf
           systemctl restart mosquitto          (later changes: systemctl reload mosquitto)
  gate ID: install -m 600 $out/devices/ID.env /etc/parkgate/edge.env
           install -m 644 $out/ca/ca.crt /etc/parkgate/ca.crt   (tls_ca in its [mqtt] section)
  cloud:   install -m 600 $out/devices/collector.env /etc/parkgate/collector.env
           install -m 600 $out/devices/dashboard.env /etc/parkgate/dashboard.env   (and ca.crt)
  Keep $out/ca/ca.key offline. Never commit anything from $out.
TXT
