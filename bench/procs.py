"""Helpers the bench/*.py scripts share: loopback ports, a process and its children,
and the CPU time they used (utime + stime from /proc)."""
import os
import socket
import subprocess
import time

TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, limit=10.0):
    end = time.time() + limit
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def family(pid):
    """`pid` and its children (NGINX's workers)."""
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            pids += [int(c) for c in children.read().split()]
    except FileNotFoundError:
        pass
    return pids


def cpu_seconds(pids):
    """CPU time (user + system) the processes `pids` used so far."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except FileNotFoundError:
            pass
    return total / TICK


def start_all(targets, starters, folder, backend, started):
    """Starts each proxy of `targets` with `starters[name](subfolder, backend)`, which
    returns (process, port), adding it to `started` at once (for `stop_all`, should a
    later one fail); waits until each listens. {name: (process, port)}."""
    proxies = {}
    for name in targets:
        sub = os.path.join(folder, name)
        os.makedirs(sub)
        proxy, port = starters[name](sub, backend)
        started.append(proxy)
        proxies[name] = (proxy, port)
        wait_port(port)
    return proxies


def stop_all(processes):
    """Terminates `processes`, then kills what is still running 10 s later."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except Exception:
            process.kill()


def start_evenkeel(binary, folder, config_text, workers):
    """Runs `binary serve` (no access log, WORKERS workers) on `config_text`, written to
    FOLDER/evenkeel.toml, whose first listener binds port 0; (process, its port)."""
    config = os.path.join(folder, "evenkeel.toml")
    with open(config, "w") as f:
        f.write(config_text)
    proxy = subprocess.Popen(
        [binary, "serve", "-c", config, "--workers", str(workers), "--no-access-log"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    port = int(proxy.stdout.readline().strip().rsplit(":", 1)[1])
    return proxy, port


def start_nginx(folder, name, main, connections, http):
    """Runs Debian's nginx in the foreground on FOLDER/NAME.conf: `main` (process
    directives), `worker_connections` CONNECTIONS, and an `http` block of `http` with
    access logging off and every temporary path under FOLDER/tmp; the process."""
    os.makedirs(os.path.join(folder, "tmp"), exist_ok=True)
    conf = os.path.join(folder, f"{name}.conf")
    temp = "\n".join(f"    {kind}_temp_path {folder}/tmp/{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    with open(conf, "w") as f:
        f.write(f"""daemon off;
{main}
pid {folder}/{name}.pid;
error_log {folder}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
{temp}
{http}
}}
""")
    return subprocess.Popen(["nginx", "-p", folder, "-e", f"{folder}/error.log", "-c", conf],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
