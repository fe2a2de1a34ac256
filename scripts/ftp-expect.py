#!/usr/bin/env python3
"""Makes the kernel's FTP helper create expectations: ADDR CTRL_PORT CLIENT_PORT:DATA_PORT...

For each CLIENT_PORT:DATA_PORT pair, a client bound to ADDR:CLIENT_PORT opens an FTP control
connection to a server on ADDR:CTRL_PORT, sends PASV (EPSV for IPv6), and the server answers
that the data connection will be on DATA_PORT; nf_conntrack_ftp reads the answer and expects
ADDR -> ADDR:DATA_PORT. The control connection then closes (its entry stays in TIME_WAIT, and
the expectation with it, for two minutes). Run it inside a test network namespace whose
ruleset gives port CTRL_PORT the "ftp" helper (an nft `ct helper set` rule), with a timeout.
Every socket operation times out after 5 s; nothing else is touched.
"""
import socket
import sys
import threading


def exchange(addr, ctrl, client_port, data_port):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.settimeout(5)
    srv.bind((addr, ctrl))
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        conn.settimeout(5)
        conn.sendall(b"220 ready\r\n")
        conn.recv(100)
        if family == socket.AF_INET6:
            reply = "229 Entering Extended Passive Mode (|||%d|)\r\n" % data_port
        else:
            quad = addr.replace(".", ",")
            reply = "227 Entering Passive Mode (%s,%d,%d)\r\n" % (quad, data_port >> 8, data_port & 255)
        conn.sendall(reply.encode())
        # The client reads the answer before either side closes.
        conn.recv(100)
        conn.close()

    server = threading.Thread(target=serve)
    server.start()
    cli = socket.socket(family, socket.SOCK_STREAM)
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    cli.settimeout(5)
    cli.bind((addr, client_port))
    cli.connect((addr, ctrl))
    cli.recv(100)
    cli.sendall(b"EPSV\r\n" if family == socket.AF_INET6 else b"PASV\r\n")
    answer = cli.recv(200)
    cli.sendall(b"QUIT\r\n")
    cli.close()
    server.join(10)
    srv.close()
    if not answer.startswith(b"22"):
        raise SystemExit("unexpected answer %r" % answer)


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    addr, ctrl = sys.argv[1], int(sys.argv[2])
    for pair in sys.argv[3:]:
        client_port, data_port = (int(p) for p in pair.split(":"))
        exchange(addr, ctrl, client_port, data_port)


main()
