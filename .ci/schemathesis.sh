#!/usr/bin/env bash
# Schemathesis (pinned: its config keys and its habit of taking path ids
# from the bearer token's `sub` are version-specific) against a live
# latchkey, with every check, authenticated operations included.
#
#   .ci/schemathesis.sh [BINARY]            # default: target/debug/latchkey
#
# Starts the binary on a scratch data directory with an administrator made
# offline first (a password that is none of the spec's examples, which the
# tool sends as bodies), logs in, and runs two stages:
# 1. every operation except the three that end the caller's own sessions,
#    with the administrator's token: otherwise the tool revokes it in the
#    first seconds and the rest of the run sees only (documented) 401s;
# 2. each of those three, and the operations that need a secret to reach
#    their success answer (password, refresh cookie), in its own run with a
#    fresh throwaway account whose secrets go in through the config.
# Exits non-zero on any failure, or when the administrator's token stops
# working during stage 1. ST_MAX_EXAMPLES (default 50) bounds the examples
# per operation; the reports go to target/schemathesis-report.
set -uo pipefail
cd "$(dirname "$0")/.."
BINARY=${1:-target/debug/latchkey}
MAX_EXAMPLES=${ST_MAX_EXAMPLES:-50}
WORKERS=1
VENV=target/schemathesis-venv
if [[ ! -x $VENV/bin/schemathesis ]]; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet 'schemathesis==4.32.5' || exit 2
fi
export PATH="$PWD/$VENV/bin:$PATH"
REPORT_DIR=$PWD/target/schemathesis-report
mkdir -p "$REPORT_DIR"
WORK=$(mktemp -d)
SERVER_PID=
cleanup() { [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

ADMIN_PASSWORD="violet kestrel $(od -An -N4 -tx1 /dev/urandom | tr -d ' \n') anchor"
printf '%s\n' "$ADMIN_PASSWORD" | "$BINARY" user create --data-dir "$WORK/data" \
  --email st-admin@example.com --username st-admin --role admin --password-stdin >/dev/null || exit 2
RUST_LOG=warn,latchkey=info "$BINARY" --port 0 --data-dir "$WORK/data" --rate-limits off \
  2>"$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do
  ADDRESS=$(sed -n 's/.*address=\([0-9.:]*\).*/\1/p' "$WORK/server.log" | head -1)
  [[ -n $ADDRESS ]] && break
  sleep 0.1
done
[[ -n ${ADDRESS:-} ]] || { echo "schemathesis: latchkey did not start" >&2; cat "$WORK/server.log" >&2; exit 2; }
BASE_URL="http://$ADDRESS"
TOKEN=$(curl -s -X POST "$BASE_URL/api/auth/login" -H 'Content-Type: application/json' \
  -d "{\"email\":\"st-admin@example.com\",\"password\":\"$ADMIN_PASSWORD\"}" \
  | sed -n 's/.*"accessToken":"\([^"]*\)".*/\1/p')
[[ -n $TOKEN ]] || { echo "schemathesis: the administrator cannot log in" >&2; exit 2; }

# Rules OpenAPI 3.0 cannot state, so a schema-valid value may still get a
# 400 with the reason: the password policy (common, patterned, or holding
# the username or email: `weak_password`), which roles exist (set by
# --extra-roles), and calendar dates (`since` may match its pattern and
# still name no day, as 2026-13-45T…); and a mailed token, which only its
# mail knows: any other well-formed one is a 400 `…_token_invalid`. (An
# operation that checks a password answers 401 to the spec's example one.)
# Likewise one-time codes and WebAuthn answers: a well-formed code is still
# the wrong one (400, or 401 at a login's second step), a well-formed
# credential still fails the ceremony, an unknown challenge or mfaToken is
# refused; the TOTP and passkey operations also answer 409 for the state
# they find (nothing to confirm, too many passkeys), and a passkey name may
# hold control characters the schema cannot forbid.
cat > "$WORK/schemathesis.toml" <<'TOML'
[[operations]]
include-name = "POST /api/auth/mfa/totp/setup"
checks.positive_data_acceptance.expected-statuses = ["2xx", "403", "409"]

[[operations]]
include-name = "POST /api/auth/mfa/totp/confirm"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "409"]

[[operations]]
include-name = "DELETE /api/auth/mfa/totp"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "409"]

[[operations]]
include-name = "POST /api/auth/mfa/recovery-codes"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "409"]

[[operations]]
include-name = "POST /api/auth/mfa/verify"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401"]

[[operations]]
include-name = "POST /api/auth/passkeys/register/start"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "403", "409"]

[[operations]]
include-name = "POST /api/auth/passkeys/register/finish"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400"]

[[operations]]
include-name = "DELETE /api/auth/passkeys/{id}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "403", "404"]

[[operations]]
include-name = "POST /api/auth/passkeys/login/start"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400"]

[[operations]]
include-name = "POST /api/auth/passkeys/login/finish"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401"]

[[operations]]
include-name = "DELETE /api/admin/users/{id}/mfa"
checks.positive_data_acceptance.expected-statuses = ["2xx", "404"]

[[operations]]
include-name = "POST /api/auth/verify-email"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400"]

[[operations]]
include-name = "POST /api/auth/password-reset/confirm"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400"]

[[operations]]
include-name = "POST /api/profile/email/confirm"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "409"]

[[operations]]
include-name = "POST /api/profile/email"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "409"]

[[operations]]
include-name = "POST /api/auth/register"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "409"]

[[operations]]
include-name = "POST /api/auth/password"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401"]

[[operations]]
include-name = "PATCH /api/admin/users/{id}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404"]

[[operations]]
include-name = "GET /api/admin/audit"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400"]
TOML

SEED_ARGS=()
[[ -n "${ST_SEED:-}" ]] && SEED_ARGS=(--seed "$ST_SEED")
# shellcheck disable=SC2206
EXTRA_ARGS=(${ST_EXTRA_ARGS:-})

# st NAME TOKEN [--config FILE] FILTERS...: one schemathesis run. It runs in $WORK so that its
# .hypothesis/ and .schemathesis/ caches stay out of the caller's tree.
st() {
  local name=$1 token=$2 config="$WORK/schemathesis.toml"
  shift 2
  if [[ ${1:-} == --config ]]; then config=$2; shift 2; fi
  echo "=== schemathesis: $name"
  (cd "$WORK" && schemathesis --no-color --config-file "$config" run "$BASE_URL/openapi.json" \
    -H "Authorization: Bearer $token" \
    --checks all --max-examples "$MAX_EXAMPLES" --workers "$WORKERS" \
    --report junit,ndjson --report-junit-path "$REPORT_DIR/junit-$name.xml" \
    --report-ndjson-path "$REPORT_DIR/events-$name.ndjson" \
    "${SEED_ARGS[@]}" "$@" "${EXTRA_ARGS[@]}")
}

admin_ok() { # the admin token is alive and has the admin role
  [[ $(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
        "$BASE_URL/api/admin/users?limit=1") == 200 ]]
}

json_field() { # json_field NAME < body: the first "NAME":"string" of a JSON body
  sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p"
}

throwaway() { # throwaway user|admin: register and log in a fresh account; sets TW_TOKEN, TW_PASS, TW_REFRESH
  local r u body id
  TW_TOKEN='' TW_PASS='' TW_REFRESH=''
  r=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
  u="st_${r:0:8}"
  TW_PASS="Harbor-${r:8:8}-quiet-Lantern"
  body=$(curl -s -X POST "$BASE_URL/api/auth/register" -H 'Content-Type: application/json' \
    -d "{\"username\":\"$u\",\"email\":\"$u@example.com\",\"password\":\"$TW_PASS\"}")
  id=$(json_field id <<<"$body")
  [[ -n "$id" ]] || { echo "FAIL: registering a throwaway account: $body" >&2; return 1; }
  if [[ $1 == admin ]]; then
    curl -sf -o /dev/null -X PATCH "$BASE_URL/api/admin/users/$id" -H "Authorization: Bearer $TOKEN" \
      -H 'Content-Type: application/json' -d '{"roles":["user","admin"]}' \
      || { echo "FAIL: making $u an admin" >&2; return 1; }
  fi
  curl -s -D "$WORK/login.headers" -o "$WORK/login.body" -X POST "$BASE_URL/api/auth/login" \
    -H 'Content-Type: application/json' -d "{\"email\":\"$u@example.com\",\"password\":\"$TW_PASS\"}"
  TW_TOKEN=$(json_field accessToken < "$WORK/login.body")
  TW_REFRESH=$(sed -n 's/^[Ss]et-[Cc]ookie: refresh_token=\([^;]*\);.*/\1/p' "$WORK/login.headers")
  [[ -n "$TW_TOKEN" && -n "$TW_REFRESH" ]] || { echo "FAIL: logging in $u" >&2; return 1; }
}

bind() { # bind OPERATION KEY VALUE: print a config that always puts VALUE in parameter KEY
  cat "$WORK/schemathesis.toml" - > "$WORK/bound.toml" <<EOF

[dictionaries.bound]
values = ["$3"]

[[operations]]
include-name = "$1"
parameters = { "$2" = { dictionary = "bound", probability = 1.0 } }
EOF
  echo "$WORK/bound.toml"
}

start=$SECONDS
admin_ok || { echo "FAIL: ADMIN_TOKEN is not a live admin token for $BASE_URL" >&2; exit 2; }
rc=0

# Stage 1: everything that leaves the caller's sessions alone.
st main "$TOKEN" \
  --exclude-name 'POST /api/auth/logout-all' \
  --exclude-name 'DELETE /api/auth/sessions/{id}' \
  --exclude-name 'POST /api/admin/users/{id}/revoke-sessions' || rc=1
if ! admin_ok; then
  echo "FAIL: the admin token stopped working during stage 1, so its results cannot be trusted" >&2
  rc=1
fi

# Stage 2: one throwaway account per operation that ends its caller's sessions or account. The
# secrets they need to reach their 2xx (password, refresh cookie) go in through dictionaries.
throwaway user && st logout-all "$TW_TOKEN" --include-name 'POST /api/auth/logout-all' || rc=1
throwaway user && st sessions "$TW_TOKEN" \
  --include-name 'GET /api/auth/sessions' --include-name 'DELETE /api/auth/sessions/{id}' || rc=1
throwaway admin && st revoke-sessions "$TW_TOKEN" \
  --include-name 'POST /api/admin/users/{id}/revoke-sessions' || rc=1
throwaway user && st delete-account "$TW_TOKEN" \
  --config "$(bind 'DELETE /api/profile/me' body.password "$TW_PASS")" \
  --include-name 'DELETE /api/profile/me' || rc=1
throwaway user && st change-password "$TW_TOKEN" \
  --config "$(bind 'POST /api/auth/password' body.currentPassword "$TW_PASS")" \
  --include-name 'POST /api/auth/password' || rc=1
throwaway user && st refresh "$TW_TOKEN" \
  --config "$(bind 'POST /api/auth/refresh' cookie.refresh_token "$TW_REFRESH")" \
  --include-name 'POST /api/auth/refresh' || rc=1
throwaway user && st change-email "$TW_TOKEN" \
  --config "$(bind 'POST /api/profile/email' body.password "$TW_PASS")" \
  --include-name 'POST /api/profile/email' || rc=1
throwaway user && st logout "$TW_TOKEN" \
  --config "$(bind 'POST /api/auth/logout' cookie.refresh_token "$TW_REFRESH")" \
  --include-name 'POST /api/auth/logout' || rc=1

echo "=== schemathesis: $([[ $rc == 0 ]] && echo passed || echo FAILED) in $((SECONDS - start))s;" \
  "reports in $REPORT_DIR"
grep -q "panicked" "$WORK/server.log" && { echo "schemathesis: the server panicked" >&2; rc=1; }
exit $rc
