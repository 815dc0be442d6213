/* A libmodbus Modbus TCP server on 127.0.0.1:PORT playing the PLC's MB_SERVER for the daemon's client mode.
 * Several clients at once (select loop, as in libmodbus' own tests): the daemon and the simulated PLC
 * program share its holding registers. 1000 holding registers, 0-based PDU addresses.
 * build: gcc -O2 -Wall -o lmb_server lmb_server.c $(pkg-config --cflags --libs libmodbus)
 * usage: lmb_server PORT      prints "listening" once it accepts connections
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/select.h>
#include <unistd.h>
#include <modbus.h>

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 15502;
    modbus_t *ctx = modbus_new_tcp("127.0.0.1", port);
    modbus_mapping_t *mb = modbus_mapping_new(0, 0, 1000, 0);
    if (!ctx || !mb) { fprintf(stderr, "alloc failed\n"); return 1; }
    int server = modbus_tcp_listen(ctx, 8);
    if (server < 0) { fprintf(stderr, "listen: %s\n", modbus_strerror(errno)); return 1; }
    printf("libmodbus %s listening on 127.0.0.1:%d\n", LIBMODBUS_VERSION_STRING, port);
    fflush(stdout);
    fd_set all;
    FD_ZERO(&all);
    FD_SET(server, &all);
    int maxfd = server;
    for (;;) {
        fd_set rd = all;
        if (select(maxfd + 1, &rd, NULL, NULL, NULL) < 0) {
            if (errno == EINTR) continue;
            perror("select");
            return 1;
        }
        for (int fd = 0; fd <= maxfd; fd++) {
            if (!FD_ISSET(fd, &rd)) continue;
            if (fd == server) {
                int c = modbus_tcp_accept(ctx, &server);
                if (c >= 0) { FD_SET(c, &all); if (c > maxfd) maxfd = c; }
                continue;
            }
            uint8_t q[MODBUS_TCP_MAX_ADU_LENGTH];
            modbus_set_socket(ctx, fd);
            int rc = modbus_receive(ctx, q);
            if (rc > 0) {
                modbus_reply(ctx, q, rc, mb);
            } else if (rc == -1) {
                close(fd);
                FD_CLR(fd, &all);
            }
        }
    }
}
