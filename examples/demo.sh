#!/bin/sh
# make demo: back up a small sample OpenClaw home to a local store, change it, back up again
# (incremental), restore into an empty folder and show that it equals the second state.
# Everything lives under .demo/ in the project; nothing else is touched.
set -eu
[ "${OCB_DEBUG:-}" = 1 ] && set -x
project=$(cd "$(dirname -- "$0")/.." && pwd)
demo="$project/.demo"
rm -rf "$demo"
mkdir -p "$demo"
export HOME="$demo/home"
export OCB_STORE="file://$demo/store"
export OCB_WORK_DIR="$demo/work"
export OCB_CACHE_DIR="$demo/cache"
PATH="$project/bin:$PATH"
say() { printf '\n== %s\n' "$*"; }

say "a sample OpenClaw home in $HOME"
mkdir -p "$HOME/.openclaw/agents/main/sessions" "$HOME/.openclaw/workspace" "$HOME/.ssh" \
    "$HOME/.claude" "$HOME/.config/openclaw" "$HOME/.openclaw/logs"
printf '{"agent": "main", "model": "demo"}\n' >"$HOME/.openclaw/openclaw.json"
printf '# Agents\nBe helpful.\n' >"$HOME/.openclaw/workspace/AGENTS.md"
for n in 1 2 3; do
    printf '{"role": "user", "text": "hello %s"}\n' "$n" >"$HOME/.openclaw/agents/main/sessions/s$n.jsonl"
done
printf 'not a real key\n' >"$HOME/.ssh/id_ed25519"
chmod 600 "$HOME/.ssh/id_ed25519"
chmod 700 "$HOME/.ssh"
ln -s ../.openclaw/workspace/AGENTS.md "$HOME/.claude/CLAUDE.md"
printf 'theme=dark\n' >"$HOME/.config/openclaw/settings"
printf 'regenerable noise\n' >"$HOME/.openclaw/logs/gateway.log"
find "$HOME" | sed "s|$HOME|~|" | sort

say "first backup (full)"
ocb-backup | jq -c '{id, type: .plan.type, files: .archive.files, bytes: .archive.size}'

say "change, add, rename and delete files"
printf '{"role": "assistant", "text": "hi"}\n' >>"$HOME/.openclaw/agents/main/sessions/s1.jsonl"
printf '{"role": "user", "text": "new session"}\n' >"$HOME/.openclaw/agents/main/sessions/s4.jsonl"
mv "$HOME/.openclaw/agents/main/sessions/s2.jsonl" "$HOME/.openclaw/agents/main/sessions/renamed.jsonl"
rm "$HOME/.openclaw/agents/main/sessions/s3.jsonl"
sleep 1  # a new second: the next snapshot gets its own id without a suffix

say "second backup (incremental: only what changed)"
ocb-backup | jq -c '{id, type: .plan.type, changes: .plan.changes, files_in_archive: .archive.stats.files}'

say "the store"
(cd "$demo/store" && find . -type f ! -name '.ocb-store.lock' | sort)
ocb-chain --list | jq -r '.list.snapshots[] | "\(.id)\(if .latest then "  (latest)" else "" end)"'

say "restore into an empty folder"
ocb-restore --to "$demo/restored" | jq -c '.pull.roots'

say "compare the restored tree with the second state (content, mode, mtime, links)"
listing() { (cd "$1" && find . ! -path './logs' ! -path './logs/*' -printf '%p %y %m %T@ %l\n' | sort); }
status=0
for dir in .openclaw .ssh .claude .config; do
    if diff -r --no-dereference -x logs "$HOME/$dir" "$demo/restored/$dir" >/dev/null &&
        [ "$(listing "$HOME/$dir")" = "$(listing "$demo/restored/$dir")" ]; then
        echo "home/$dir: identical"
    else
        echo "home/$dir: DIFFERS"; status=1
    fi
done
[ ! -e "$demo/restored/.openclaw/logs" ] && echo "home/.openclaw/logs: left out by the default excludes, as intended"
[ "$status" -eq 0 ] && say "demo ok: the restore equals the second state"
exit "$status"
