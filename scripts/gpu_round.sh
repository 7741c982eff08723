#!/usr/bin/env bash
# One training round on a lent GPU (H100 / H200): faces packed here, carried in parts, trained there for minutes.
#
# The lent machine's rules (see /work/.library/device/): 15 device minutes per task, ITS START INCLUDED (1-3 min);
# at most 10 minutes per command; every call carries the working tree (tracked and untracked-not-ignored files,
# about 18 MiB once the big files the run does not need are aside) plus the `carry` paths, 64 MiB in all; files
# come back only from $OUT (8 files of at most 16 MiB); the machine is given back 30 s after a call returns
# (status: idle_release_s) and a background run dies with it, so calls must follow one another at once.
#
# Subcommands:
#   prepare  HERE  check CONFIG + EXTRA_SETS, pack the faces (scripts/pack_faces.py; skipped when up to date) into
#                  parts that fill the room a call has, stage the loss networks' files that the recipe needs, fill
#                  one carry folder per call (data/gpu-round/call-N/), move the big tracked files the run does not
#                  need (ASIDE) to data/gpu-round/aside/, and print the tool calls. MOVE=0: plan only, none moved.
#   restore  HERE  move the ASIDE files back. Always run it after the round (prepare runs it if it fails late).
#   stash    GPU   copy the carried parts to $WORK (the first call of a two-call plan, DATA_CALLS=2).
#   start    GPU   stash, then start `faceinpaint train CONFIG --resume RESUME` under setsid nohup (it outlives the
#                  call), print the settings and the first log lines, and return. No CUDA needed (CPU smoke runs).
#   collect  GPU   wait for the run to end (it stops itself at MAX_MINUTES), slim its newest checkpoint (fp16, no
#                  optimiser: faceinpaint.training.checkpoint.slim_checkpoint, as `export-weights --keep-checkpoint`), and
#                  copy it, metrics.jsonl, log.txt, config.yaml, the trainer's output, the last sample grid and
#                  collect.txt (summary, checkpoint sha256, nvidia-smi samples of GPU memory) into $OUT.
#
# The calls (prepare prints them with their sizes), one call for the whole round (DATA_CALLS=1, the default):
#   here:  scripts/gpu_round.sh prepare
#   1. run(command="bash scripts/gpu_round.sh start && bash scripts/gpu_round.sh collect",
#          carry=["data/gpu-round/call-1"], timeout_s=600)
#   2. give_back()                       (at once: an idle machine still counts)
#   here:  scripts/gpu_round.sh restore
# DATA_CALLS=2 (the whole 128 px training set, about 62 MiB) adds a call before, made back to back with the next:
#   1. run(command="bash scripts/gpu_round.sh stash", carry=["data/gpu-round/call-1"], timeout_s=120)
#   2. run(command="bash scripts/gpu_round.sh start && bash scripts/gpu_round.sh collect",
#          carry=["data/gpu-round/call-2"], timeout_s=600)
# To read the first log lines before the run ends, split the last call into `start` (timeout_s=180) and, AT ONCE
# (within 30 s), `collect` (timeout_s=600, no carry).
#
# Time plan (device minutes, the start of the machine included; MAX_MINUTES=8):
#   0      the call asks for a machine; it starts (1-3 min) and receives the tree and the carry folder
#   ~2-3   start: parts copied to /tmp/gpu-round, trainer launched; it decodes the faces onto the GPU (seconds),
#          logs every LOG_EVERY steps, saves (and validates) every SAVE_EVERY steps and on SIGTERM
#   ~10-11 the trainer saves and stops at --max-minutes MAX_MINUTES (counted from its own start)
#   ~11    collect: slim + copy into $OUT (seconds); the files come back; give_back at ~11.5: 3 minutes to spare
#   collect never waits past trainer start + MAX_MINUTES + 40 s (then SIGTERM, 30 s to save) nor past 520 s of its
#   own, so the chained command ends inside its 600 s. Keep MAX_MINUTES <= 8.5, and check status's budget_left_s.
#
# Back here, with the files from $OUT under FILES (the reply's files_at):
#   mkdir -p runs/gpu-round/checkpoints && cp FILES/{metrics.jsonl,log.txt,config.yaml} runs/gpu-round/
#   cat FILES/step-*.pt* > runs/gpu-round/checkpoints/step-N.pt   # one file, or pieces .part0 .part1 ... in order
#   sha256sum runs/gpu-round/checkpoints/step-N.pt                 # compare with collect.txt
#   faceinpaint export-weights runs/gpu-round weights/NEW --fp16   # model dir + card; or train CONFIG --resume it
#
# Settings (environment). Here: SIZE (128; 256 suits BATCH=32), FORMAT (webp at <= 128 px, jpeg above: see
# pack_faces.py), QUALITY (90), LIST (data/lists/train.flist), EVERY (1), LIMIT (0: all), VAL_LIST
# (data/lists/val.flist), VAL_EVERY (4: 253 faces; 0: no validation), DATA_CALLS (1 or 2), PART_MIB (auto: the
# start call's room in equal parts of <= 20 MiB), ASIDE (checkpoints/twoface-face-256.pt weights/twoface-face-256
# weights/deepfillv2-face-256), MOVE (1), LIMIT_MIB (64), MARGIN_MIB (1.5). prepare records SIZE, EXTRA_SETS and
# any of CONFIG RESUME BATCH MAX_MINUTES SAVE_EVERY LOG_EVERY it is given in plan.env for start; a variable given
# to start wins. There: WORK (/tmp/gpu-round), CONFIG (configs/deepfillv2_face-256.yaml), RESUME
# (checkpoints/deepfillv2-face-256.pt; empty: a fresh run), BATCH (64 at <= 128 px, else 32), MAX_MINUTES (8),
# SAVE_EVERY (500), LOG_EVERY (50), WORKERS (the CPU count), START_WAIT_S (90), EXTRA_SETS (more --set flags, e.g.
# "--set train.stlpips_weight=1 --set train.feature_matching_weight=10"; no spaces inside a value), SPLIT_MIB
# (15.9: a larger checkpoint comes back in pieces of that size), COLLECT_WAIT_S (520; the longest collect waits
# before it stops the run with SIGTERM: 0 stops it at once), OUT (set by the tool).
# Also: REPO (the repo root; default this script's), PY (.venv/bin/python if there, else python3).
set -euo pipefail
shopt -s nullglob

SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "${REPO:-$SCRIPTS/..}" && pwd)
cd "$ROOT"
PY=${PY:-$([ -x .venv/bin/python ] && echo "$ROOT/.venv/bin/python" || echo python3)}
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
ROUND=data/gpu-round
WORK=${WORK:-/tmp/gpu-round}
MIB=1048576

die() {
    echo "gpu_round: $*" >&2
    exit 1
}

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# Bytes of the regular files under the given paths (missing paths count 0).
bytes_of() {
    local total=0 size path
    for path in "$@"; do
        [ -e "$path" ] || continue
        size=$(find "$path" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
        total=$((total + size))
    done
    echo "$total"
}

# Bytes that a call carries besides `carry`: the tracked and untracked-not-ignored files that exist.
tree_bytes() {
    { git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null || true; } |
        awk '{ s += $1 } END { print s + 0 }'
}

aside_list() { echo "${ASIDE-checkpoints/twoface-face-256.pt weights/twoface-face-256 weights/deepfillv2-face-256}"; }

cmd_restore() {
    local moved=0 file target
    [ -d "$ROUND/aside" ] || {
        echo "restore: nothing is aside"
        return 0
    }
    while IFS= read -r -d '' file; do
        target=${file#"$ROUND/aside/"}
        if [ -e "$target" ]; then
            cmp -s "$file" "$target" || die "restore: $target exists and differs from $file; resolve it by hand"
            rm "$file"
        else
            mkdir -p "$(dirname "$target")"
            mv "$file" "$target"
        fi
        moved=$((moved + 1))
    done < <(find "$ROUND/aside" -type f -print0)
    rm -rf "$ROUND/aside"
    echo "restore: $moved file(s) back in place"
}

# Check CONFIG with EXTRA_SETS here (a typo fails now, not on the GPU), and stage the files of the loss networks it
# switches on as data-only packages under $ROUND/site, which start puts first on PYTHONPATH.
stage_site() {
    rm -rf "$ROUND/site"
    set -f
    # shellcheck disable=SC2086
    "$PY" - "$ROUND/site" "${CONFIG:-configs/deepfillv2_face-256.yaml}" ${EXTRA_SETS:-} <<'PYTHON' || exit 1
import importlib.util, shutil, sys
from pathlib import Path
from faceinpaint.config import load_config
from faceinpaint.errors import InpaintError

site, config, words = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
try:
    if len(words) % 2 or any(word != "--set" for word in words[::2]):
        raise InpaintError(f"EXTRA_SETS {' '.join(words)!r}: expected --set section.key=value ...")
    train = load_config(config, words[1::2]).train
    files = {}  # package -> (file inside it, where it is here)
    if train.stlpips_weight > 0:
        from faceinpaint.evaluation.metrics import package_file
        from faceinpaint.models.perceptual import STLPIPS_INSTALL, STLPIPS_WEIGHTS

        files["stlpips_pytorch"] = (STLPIPS_WEIGHTS, package_file("stlpips_pytorch", STLPIPS_WEIGHTS, STLPIPS_INSTALL))
    if train.dlib_feature_weight > 0 or train.identity_weight > 0:
        from faceinpaint.models.dlib_resnet import INSTALL, MODEL_FILE, MODEL_PACKAGE

        spec = importlib.util.find_spec(MODEL_PACKAGE)
        source = Path(next(iter(spec.submodule_search_locations)), "models", MODEL_FILE) if spec else Path(MODEL_FILE)
        if not source.is_file():
            raise InpaintError(f"the dlib losses need {MODEL_FILE} from {MODEL_PACKAGE}: {INSTALL}")
        files[MODEL_PACKAGE] = (f"models/{MODEL_FILE}", str(source))
except (InpaintError, OSError) as error:
    sys.exit(f"gpu_round: {error}")
for package, (inside, source) in files.items():
    (site / package / inside).parent.mkdir(parents=True)
    (site / package / "__init__.py").write_text('"""Data only: a loss network\'s file for scripts/gpu_round.sh."""\n')
    shutil.copyfile(source, site / package / inside)
    print(f"prepare: staged {package}/{inside} for the loss networks")
PYTHON
    set +f
}

pack() { "$PY" "$SCRIPTS/pack_faces.py" --size "$SIZE" --format "$FORMAT" --quality "${QUALITY:-90}" "$@"; }

cmd_prepare() {
    SIZE=${SIZE:-128}
    FORMAT=${FORMAT:-$([ "$SIZE" -le 128 ] && echo webp || echo jpeg)}
    local limit calls=${DATA_CALLS:-1} tree room start_room part packed="data/packed/$SIZE" path moved n
    limit=$(awk -v l="${LIMIT_MIB:-64}" -v m="${MARGIN_MIB:-1.5}" 'BEGIN { printf "%d", (l - m) * 1048576 }')
    [[ $calls =~ ^[12]$ ]] || die "prepare: DATA_CALLS=$calls: use 1 or 2"
    git rev-parse --is-inside-work-tree >/dev/null 2>&1 || die "prepare: $ROOT is not a git work tree"
    [ ! -d "$ROUND/aside" ] || die "prepare: files are still aside from an earlier prepare: run restore first"
    for path in $(aside_list); do
        [ -e "$path" ] || die "prepare: ASIDE path $path: no such file or folder"
        [ -n "$(git ls-files -- "$path")" ] || die "prepare: ASIDE path $path is not tracked by git"
    done
    for path in ${RESUME-checkpoints/deepfillv2-face-256.pt} ${CONFIG:-configs/deepfillv2_face-256.yaml}; do
        for moved in $(aside_list); do
            [[ $path != "$moved" && $path != "$moved"/* ]] || die "prepare: the run needs $path; it is in ASIDE"
        done
    done

    # Validation and the loss networks ride with the start call and shrink its room: they come first.
    stage_site
    if [ "${VAL_EVERY:-4}" = 0 ]; then
        rm -rf "$packed/val"
    else
        pack --list "${VAL_LIST:-data/lists/val.flist}" --every "${VAL_EVERY:-4}" --part-mib 60 --out "$packed/val" ||
            exit 1
    fi
    # shellcheck disable=SC2046
    tree=$(($(tree_bytes) - $(bytes_of $(aside_list))))
    room=$((limit - tree))
    start_room=$((room - $(bytes_of "$packed/val" "$ROUND/site") - 4096))
    [ "$start_room" -gt 0 ] || die "prepare: the tree is $(mib "$tree") MiB: no room left for faces in a call"
    # Parts of at most 20 MiB that fill the start call's room: k equal parts, rounded down to 0.5 MiB so that a
    # small change of the tree does not change them (and force a repack).
    part=${PART_MIB:-$(awk -v r="$start_room" 'BEGIN { k = int((r / 1048576 + 19.999) / 20);
        p = int(r / k / 1048576 * 2) / 2; if (p < 0.5) p = int(r / k / 1048576 * 100) / 100; printf "%.2f", p }')}
    pack --list "${LIST:-data/lists/train.flist}" --every "${EVERY:-1}" --limit "${LIMIT:-0}" --part-mib "$part" \
        --out "$packed/train" || exit 1

    # One carry folder per call: the parts, hard-linked, in order; the last (start) call also takes val, site, plan.
    local parts=("$packed"/train/part-*.zip) capacity=() used=() call=1 size file carried=0 left=0
    [ "$(bytes_of "$packed/train")" -gt "$start_room" ] || calls=1 # all of it fits into one call
    for n in $(seq 1 "$calls"); do capacity[n]=$([ "$n" -lt "$calls" ] && echo "$room" || echo "$start_room"); done
    rm -rf "$ROUND"/call-*
    for file in "${parts[@]}"; do
        size=$(bytes_of "$file")
        while [ "$call" -le "$calls" ] && [ $((${used[call]:-0} + size)) -gt "${capacity[call]}" ]; do
            call=$((call + 1))
        done
        if [ "$call" -gt "$calls" ]; then
            left=$((left + 1))
            continue
        fi
        mkdir -p "$ROUND/call-$call/train"
        ln "$file" "$ROUND/call-$call/train/" 2>/dev/null || cp "$file" "$ROUND/call-$call/train/"
        used[call]=$((${used[call]:-0} + size))
        carried=$((carried + 1))
    done
    [ "$carried" -gt 0 ] || die "prepare: no part fits into the room of a call, $(mib "$start_room") MiB"
    local last="$ROUND/call-$calls" from name
    mkdir -p "$last"
    for from in "$packed/val" "$ROUND/site"; do
        [ ! -d "$from" ] || cp -al "$from" "$last/" 2>/dev/null || cp -a "$from" "$last/"
    done
    {
        echo "# Written by scripts/gpu_round.sh prepare; start reads it (a variable in start's environment wins)."
        for name in SIZE EXTRA_SETS CONFIG RESUME BATCH MAX_MINUTES SAVE_EVERY LOG_EVERY; do
            [ -z "${!name+set}" ] || printf '[ -n "${%s+set}" ] || %s=%q\n' "$name" "$name" "${!name}"
        done
    } >"$last/plan.env"

    # Move aside last, so that a failure above leaves the tree as it was; then measure the tree again.
    if [ "${MOVE:-1}" = 1 ]; then
        for path in $(aside_list); do
            mkdir -p "$(dirname "$ROUND/aside/$path")"
            mv "$path" "$ROUND/aside/$path"
        done
        tree=$(tree_bytes)
    fi
    for n in $(seq 1 "$calls"); do
        size=$(($(bytes_of "$ROUND/call-$n") + tree))
        if [ "$size" -gt "$limit" ]; then
            [ "${MOVE:-1}" != 1 ] || cmd_restore
            die "prepare: call $n would carry $(mib "$size") MiB with the tree, over the limit"
        fi
    done
    local faces
    faces=$("$PY" -c "import sys, zipfile; print(sum(len(zipfile.ZipFile(p).namelist()) for p in sys.argv[1:]))" \
        "$ROUND"/call-*/train/part-*.zip)
    echo
    echo "prepare: $faces faces at $SIZE px in $carried of ${#parts[@]} part(s) ($left left out), $calls call(s);" \
        "tree $(mib "$tree") MiB without: $(aside_list)"
    [ "${MOVE:-1}" = 1 ] || echo "prepare: MOVE=0, nothing was moved: prepare again without MOVE=0 before the calls"
    echo "device calls (back to back: the machine goes back 30 s after a call returns):"
    local command timeout
    for n in $(seq 1 "$calls"); do
        command="bash scripts/gpu_round.sh stash" timeout=120
        if [ "$n" = "$calls" ]; then
            command="bash scripts/gpu_round.sh start && bash scripts/gpu_round.sh collect" timeout=600
        fi
        echo "  $n. run(command=\"$command\", carry=[\"$ROUND/call-$n\"], timeout_s=$timeout)" \
            "  # $(mib $(($(bytes_of "$ROUND/call-$n") + tree))) MiB with the tree"
    done
    echo "  then give_back(), and here: scripts/gpu_round.sh restore"
}

cmd_stash() {
    local found=0 folder kind parts
    mkdir -p "$WORK"
    for folder in "$ROUND"/call-*/; do
        for kind in train val site; do
            [ ! -d "$folder$kind" ] || { mkdir -p "$WORK/$kind" && cp -r "$folder$kind/." "$WORK/$kind/"; }
        done
        [ ! -f "${folder}plan.env" ] || cp "${folder}plan.env" "$WORK/plan.env"
        found=1
    done
    [ "$found" = 1 ] || die "stash: no $ROUND/call-* folder here: was it named in carry?"
    parts=("$WORK"/train/part-*.zip)
    echo "stash: $WORK/train holds ${#parts[@]} part(s), $(mib "$(bytes_of "$WORK/train")") MiB"
}

# The pid in a pid file if that process still runs (not a zombie) and is the named program, else nothing.
alive() {
    local pid state
    pid=$(cat "$1" 2>/dev/null) || return 0
    grep -qa "$2" "/proc/$pid/cmdline" 2>/dev/null || return 0
    read -r _ _ state _ 2>/dev/null <"/proc/$pid/stat" || return 0
    [ "$state" = Z ] || echo "$pid"
}

trainer() { alive "$WORK/train.pid" faceinpaint; }

cmd_start() {
    cmd_stash
    # shellcheck disable=SC1091
    [ ! -f "$WORK/plan.env" ] || . "$WORK/plan.env"
    SIZE=${SIZE:-128}
    CONFIG=${CONFIG:-configs/deepfillv2_face-256.yaml}
    RESUME=${RESUME-checkpoints/deepfillv2-face-256.pt}
    BATCH=${BATCH:-$([ "$SIZE" -le 128 ] && echo 64 || echo 32)}
    MAX_MINUTES=${MAX_MINUTES:-8}
    SAVE_EVERY=${SAVE_EVERY:-500}
    local parts=("$WORK"/train/part-*.zip) val="" resume=() extra=() waited=0 log=""
    [ "${#parts[@]}" -gt 0 ] || die "start: no parts in $WORK/train"
    [ -f "$CONFIG" ] || die "start: config $CONFIG: no such file"
    [ -z "$RESUME" ] || [ -f "$RESUME" ] || die "start: checkpoint $RESUME: no such file"
    [ -z "$RESUME" ] || resume=(--resume "$RESUME")
    [ -z "$(trainer)" ] || die "start: a run is already going (pid $(trainer)); collect it first"
    [ -z "$(find "$WORK/val" -name '*.zip' 2>/dev/null)" ] || val="$WORK/val"
    [ ! -d "$WORK/site" ] || export PYTHONPATH="$WORK/site:$PYTHONPATH"
    rm -rf "$WORK/collect" "$WORK/train.pid" "$WORK/nvidia-smi.pid" "$WORK/nvidia-smi.csv"
    local sets=(--set "data.train=$WORK/train" --set "data.val=$val" --set data.resident=true
        --set "data.workers=${WORKERS:-$(getconf _NPROCESSORS_ONLN)}" --set "model.resolution=$SIZE"
        --set "train.batch_size=$BATCH" --set train.bf16=true --set train.channels_last=true
        --set "train.save_every=$SAVE_EVERY"
        --set "train.val_every=$SAVE_EVERY" --set "train.sample_every=$SAVE_EVERY"
        --set "train.log_every=${LOG_EVERY:-50}" --set train.keep_checkpoints=2 --set train.keep_every=0
        --set "train.run_root=$WORK/runs")
    set -f
    # shellcheck disable=SC2206
    extra=(${EXTRA_SETS:-})
    set +f
    local command=("$PY" -m faceinpaint.cli train "$CONFIG" "${resume[@]}" --max-minutes "$MAX_MINUTES"
        "${sets[@]}" "${extra[@]}")
    {
        echo "started $(date -u +%FT%TZ), machine up $(cut -d' ' -f1 /proc/uptime) s," \
            "$(getconf _NPROCESSORS_ONLN) CPUs"
        echo "command: ${command[*]}"
    } >"$WORK/settings.txt"
    date +%s >"$WORK/started_at"
    echo "$MAX_MINUTES" >"$WORK/max_minutes"
    # Each process writes its own pid and then becomes the program (exec keeps the pid), even if setsid forks.
    PYTHONUNBUFFERED=1 setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$WORK/train.pid" "${command[@]}" \
        >"$WORK/train-output.txt" 2>&1 </dev/null &
    if command -v nvidia-smi >/dev/null; then
        setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$WORK/nvidia-smi.pid" nvidia-smi --format=csv -l 10 \
            --query-gpu=timestamp,name,memory.used,memory.total,utilization.gpu,power.draw \
            >"$WORK/nvidia-smi.csv" 2>&1 </dev/null &
    fi
    for _ in $(seq 50); do
        [ ! -s "$WORK/train.pid" ] || break
        sleep 0.1
    done
    cat "$WORK/settings.txt"
    while [ "$waited" -lt "${START_WAIT_S:-90}" ]; do
        log=$(find "$WORK/runs" -name log.txt -size +0 -newer "$WORK/started_at" 2>/dev/null | head -1 || true)
        [ -z "$log" ] && [ -n "$(trainer)" ] || break
        sleep 1
        waited=$((waited + 1))
    done
    tail -c 3000 "$WORK/train-output.txt"
    if [ -z "$(trainer)" ] && ! grep -q "^run dir:" "$WORK/train-output.txt"; then
        die "start: the trainer exited after $waited s (its output is above)"
    fi
    if [ -n "$log" ]; then
        echo "first log lines ($log):"
        head -3 "$log"
    else
        echo "start: no log line after $waited s; the trainer is still starting"
    fi
    echo "start: the trainer (pid $(cat "$WORK/train.pid")) stops itself after $MAX_MINUTES minutes;" \
        "collect now (the machine goes back 30 s after this call returns)"
}

cmd_collect() {
    [ -n "${OUT:-}" ] || die "collect: OUT is not set (the device tool sets it; OUT=folder to try it here)"
    [ -f "$WORK/started_at" ] || die "collect: no run was started in $WORK"
    mkdir -p "$OUT"
    local began deadline pid run summary="$WORK/collect.txt" slim="" files=() file
    began=$(date +%s)
    deadline=$(awk -v s="$(cat "$WORK/started_at")" -v m="$(cat "$WORK/max_minutes")" -v b="$began" \
        -v w="${COLLECT_WAIT_S:-520}" 'BEGIN { d = s + m * 60 + 40; if (d > b + w) d = b + w; printf "%d", d }')
    while [ -n "$(trainer)" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 2; done
    pid=$(trainer)
    if [ -n "$pid" ]; then # past its time: SIGTERM makes the trainer save and stop after the current step
        echo "collect: the trainer still runs at the deadline: SIGTERM"
        kill -TERM "$pid"
        for _ in $(seq 30); do
            [ -n "$(trainer)" ] || break
            sleep 1
        done
    fi
    pid=$(alive "$WORK/nvidia-smi.pid" nvidia-smi)
    [ -z "$pid" ] || kill "$pid"
    run=$(find "$WORK/runs" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | sort | tail -1 || true)
    [ -n "$run" ] || {
        tail -c 3000 "$WORK/train-output.txt" >&2
        die "collect: the trainer made no run dir (its output is above)"
    }
    {
        echo "gpu_round collect, $(date -u +%FT%TZ): run $run; trainer $([ -z "$(trainer)" ] && echo ended ||
            echo STILL RUNNING)"
        cat "$WORK/settings.txt"
    } >"$summary"
    mkdir -p "$WORK/collect"
    slim=$("$PY" - "$run" "$WORK/collect" 2>>"$summary" <<'PYTHON' || true
import json, sys
from pathlib import Path
from faceinpaint.training.checkpoint import find_checkpoint, read_metrics, slim_checkpoint
from faceinpaint.errors import InpaintError
run, out = Path(sys.argv[1]), Path(sys.argv[2])
try:
    newest = find_checkpoint(run)
    slim = slim_checkpoint(newest, out / newest.name)
except InpaintError as error:
    sys.exit(f"gpu_round: {error}")
records = read_metrics(run)
train = [r for r in records if r.get("kind") == "train"][-20:]  # this run's last logs (the history came along)
memory = max((r.get("gpu_memory_gib", 0.0) for r in train), default=0.0)
speeds = sorted(r["it_per_s"] for r in train if r.get("it_per_s"))
print(slim)
print(f"checkpoint {newest.name}: slimmed to {slim.stat().st_size} bytes; peak GPU memory {memory:.2f} GiB; "
      f"median it/s of the last logs {speeds[len(speeds) // 2] if speeds else 0:.2f}", file=sys.stderr)
for record in [r for r in records if r.get("kind") == "val"][-2:]:
    print("validation " + json.dumps(record), file=sys.stderr)
PYTHON
    )
    if [ -n "$slim" ]; then
        local name size piece_bytes
        name=$(basename "$slim")
        size=$(stat -c %s "$slim")
        piece_bytes=$(awk -v m="${SPLIT_MIB:-15.9}" 'BEGIN { printf "%d", m * 1048576 }')
        echo "checkpoint sha256 $(sha256sum "$slim" | cut -d' ' -f1)  $name ($size bytes)" >>"$summary"
        if [ "$size" -le "$piece_bytes" ]; then
            cp "$slim" "$OUT/$name"
            files+=("$name")
        else
            split -b "$piece_bytes" -d -a 1 "$slim" "$OUT/$name.part"
            for file in "$OUT/$name".part*; do files+=("$(basename "$file")"); done
            echo "checkpoint in $(ls "$OUT/$name".part* | wc -l) pieces: cat $name.part* > $name" >>"$summary"
        fi
    fi
    for file in metrics.jsonl log.txt config.yaml; do
        [ ! -f "$run/$file" ] || { cp "$run/$file" "$OUT/$file" && files+=("$file"); }
    done
    tail -c $((4 * MIB)) "$WORK/train-output.txt" >"$OUT/train-output.txt"
    files+=(train-output.txt)
    cat "$summary" # the reply's output_tail: the summary and the last GPU samples; collect.txt has them all
    {
        echo "--- nvidia-smi samples (every 10 s, the last 60)"
        if [ -f "$WORK/nvidia-smi.csv" ]; then tail -n 60 "$WORK/nvidia-smi.csv"; else echo "no nvidia-smi here"; fi
        echo "--- nvidia-smi now"
        if command -v nvidia-smi >/dev/null; then nvidia-smi 2>&1 | head -40; else echo "no nvidia-smi here"; fi
    } >>"$summary"
    [ ! -f "$WORK/nvidia-smi.csv" ] || { head -1 "$WORK/nvidia-smi.csv" && tail -n 3 "$WORK/nvidia-smi.csv"; }
    local sample
    sample=$(find "$run/samples" -name '*.png' 2>/dev/null | sort | tail -1 || true)
    if [ -n "$sample" ] && [ "${#files[@]}" -le 6 ] && [ "$(stat -c %s "$sample")" -le $((16 * MIB)) ]; then
        cp "$sample" "$OUT/sample-$(basename "$sample")"
        files+=("sample-$(basename "$sample")")
    fi
    echo "collect: took $(($(date +%s) - began)) s" | tee -a "$summary"
    cp "$summary" "$OUT/collect.txt"
    files+=(collect.txt)
    echo "collect: ${#files[@]} file(s) in \$OUT:"
    for file in "${files[@]}"; do
        [ "$(stat -c %s "$OUT/$file")" -le $((16 * MIB)) ] || die "collect: $OUT/$file is over 16 MiB"
        echo "  $file $(stat -c %s "$OUT/$file") bytes"
    done
    [ "${#files[@]}" -le 8 ] || die "collect: ${#files[@]} files, more than the 8 that come back"
    [ -n "$slim" ] || die "collect: no checkpoint to bring back (see collect.txt)"
}

case "${1:-}" in
prepare) cmd_prepare ;;
restore) cmd_restore ;;
stash) cmd_stash ;;
start) cmd_start ;;
collect) cmd_collect ;;
*)
    echo "gpu_round: usage: scripts/gpu_round.sh prepare|restore|stash|start|collect (see the header)" >&2
    exit 2
    ;;
esac
