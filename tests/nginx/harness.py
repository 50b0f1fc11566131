"""Start and stop a private nginx with the lua module, for tests/nginx and
bench/lua.  Standard library only.

The server listens on 127.0.0.1 on a port picked here, keeps every file
(config, pid, logs, temp dirs) in a fresh temp dir, and is stopped by the
pid in its own pid file, never by name.
"""

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODULE_DIRS = ("/usr/lib/nginx/modules", "/usr/share/nginx/modules",
               "/usr/local/openresty/nginx/modules")


def find_nginx():
    for cand in (os.environ.get("NGINX"), shutil.which("nginx"), "/usr/sbin/nginx"):
        if cand and os.path.exists(cand):
            return cand
    return None


def find_modules():
    """Absolute load_module paths, ndk first (the lua module needs it)."""
    for d in MODULE_DIRS:
        ndk = os.path.join(d, "ndk_http_module.so")
        lua = os.path.join(d, "ngx_http_lua_module.so")
        if os.path.exists(lua):
            return [p for p in (ndk, lua) if os.path.exists(p)]
    return None


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Nginx:
    """An nginx with `server_body` (locations) inside one server block."""

    def __init__(self, server_body, http_extra="", workers=1, reuseport=False, lua_path=""):
        self.nginx = find_nginx()
        self.modules = find_modules()
        if not self.nginx or not self.modules:
            raise RuntimeError("nginx with the lua module not found")
        self.dir = tempfile.mkdtemp(prefix="buttress-nginx-")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.pid = None
        build = os.environ.get("BUILD", "build")
        lib = os.environ.get("BUTTRESS_LIB") or os.path.join(REPO, build, "libbuttress.so")
        user = "user root;\n" if os.geteuid() == 0 else ""
        loads = "".join("load_module %s;\n" % m for m in self.modules)
        tmp = self.dir
        conf = f"""{loads}{user}worker_processes {workers};
daemon on;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
env BUTTRESS_LIB={lib};
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    lua_package_path "{lua_path}{REPO}/lua/?.lua;{REPO}/tests/nginx/?.lua;;";
    lua_shared_dict upstream 1m;
    {http_extra}
    server {{
        listen 127.0.0.1:{self.port}{" reuseport" if reuseport else ""};
        {server_body}
    }}
}}
"""
        conf = conf.replace("@PORT@", str(self.port))
        self.conf = os.path.join(tmp, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)

    @classmethod
    def from_conf(cls, path, prefix):
        """Run a complete nginx.conf (an example) on this test's port, pid
        file and log: its `listen 127.0.0.1:8080` and the URLs naming that
        address are moved to the picked port; paths stay relative to
        `prefix` (nginx -p)."""
        self = cls.__new__(cls)
        self.nginx = find_nginx()
        self.modules = find_modules()
        if not self.nginx or not self.modules:
            raise RuntimeError("nginx with the lua module not found")
        self.dir = tempfile.mkdtemp(prefix="buttress-nginx-")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.pid = None
        self.prefix = prefix
        with open(path) as f:
            conf = f.read()
        conf = conf.replace("127.0.0.1:8080", "127.0.0.1:%d" % self.port)
        conf = conf.replace("daemon off;", "daemon on;")
        conf = conf.replace("pid /tmp/buttress-example.pid;", "pid %s/nginx.pid;" % self.dir)
        conf = conf.replace("error_log stderr warn;", "error_log %s/error.log warn;" % self.dir)
        for m in self.modules:
            conf = conf.replace("/usr/lib/nginx/modules/" + os.path.basename(m), m)
        if os.geteuid() == 0:
            conf = "user root;\n" + conf
        conf = conf.replace("http {", "http {\n    client_body_temp_path %s/client_body;\n"
                            "    proxy_temp_path %s/proxy;\n" % (self.dir, self.dir), 1)
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        return self

    def start(self):
        # -e: the startup error log goes to our dir, not /var/log/nginx.
        prefix = getattr(self, "prefix", None) or self.dir
        cmd = [self.nginx, "-p", prefix, "-c", self.conf, "-e", os.path.join(self.dir, "error.log")]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("nginx failed to start: " + r.stderr + self.log())
        pidfile = os.path.join(self.dir, "nginx.pid")
        for _ in range(200):
            if os.path.exists(pidfile):
                with open(pidfile) as f:
                    txt = f.read().strip()
                if txt:
                    self.pid = int(txt)
                    break
            time.sleep(0.01)
        if not self.pid:
            raise RuntimeError("nginx wrote no pid file\n" + self.log())
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("nginx is not listening\n" + self.log())

    def stop(self):
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGQUIT)  # graceful: finish requests
            except ProcessLookupError:
                pass
            for _ in range(300):
                try:
                    os.kill(self.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.01)
            else:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.pid = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        try:
            with open(os.path.join(self.dir, "error.log")) as f:
                return f.read()
        except OSError:
            return ""

    def get(self, path, timeout=10):
        """(status, body, headers, seconds)"""
        t0 = time.monotonic()
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request("GET", path)
            r = c.getresponse()
            body = r.read().decode("utf-8", "replace")
            return r.status, body, dict(r.getheaders()), time.monotonic() - t0
        finally:
            c.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()


def log_errors(ng):
    """The [error], [crit] and [alert] lines of the server's error log."""
    return [line for line in ng.log().splitlines()
            if "[error]" in line or "[crit]" in line or "[alert]" in line]


def check_log_clean(ng):
    """One more check: the error log holds no error.  -> (passed, failed)"""
    bad = log_errors(ng)
    if bad:
        print("FAIL nginx error log has errors:\n  " + "\n  ".join(bad[:20]))
        return 0, 1
    print("ok   nginx error log is clean")
    return 1, 0


def run_suite(ng, checks):
    """Runs each (name, fn(ng)) check, printing ok/FAIL lines, then checks
    the error log.  -> (passed, failed)"""
    passed = failed = 0
    for name, fn in checks:
        try:
            fn(ng)
            passed += 1
            print("ok   " + name)
        except Exception:
            failed += 1
            print("FAIL " + name)
            traceback.print_exc(file=sys.stdout)
    p, f = check_log_clean(ng)
    return passed + p, failed + f


def run_main(title, start, checks):
    """The main() of a test file with one server: start() returns a started
    Nginx.  Prints the checks and a last "N passed, N failed" line; the exit
    status."""
    print("== nginx: " + title)
    try:
        ng = start()
    except Exception as e:  # no nginx, or it did not start: every check fails
        print("FAIL starting nginx: %s" % e)
        print("0 passed, %d failed" % (len(checks) + 1))
        return 1
    try:
        passed, failed = run_suite(ng, checks)
    finally:
        ng.cleanup()
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1
