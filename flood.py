import socket, threading, time, sys
port=int(sys.argv[1]); dur=float(sys.argv[2]); n=[0]
def w():
    end=time.time()+dur
    while time.time()<end:
        s=socket.create_connection(("127.0.0.1",port)); s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        while s.recv(65536): pass
        s.close(); n[0]+=1
ts=[threading.Thread(target=w) for _ in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]; print("scrapes", n[0], "per s", n[0]/dur)
