#!/bin/sh
# The deployer passes SHIPYARD_* to every container it runs (like Kamal's KAMAL_* variables).
mkdir -p /www
printf 'service=%s destination=%s version=%s role=%s\n' \
  "$SHIPYARD_SERVICE" "$SHIPYARD_DESTINATION" "$SHIPYARD_VERSION" "$SHIPYARD_ROLE" > /www/index.html
[ -n "$GREETING" ] && printf 'greeting=%s\n' "$GREETING" >> /www/index.html
echo ok > /www/up  # the health check path kamal-proxy (and the deployer) poll
# As PID 1, httpd would ignore SIGTERM and every stop would wait for the kill timeout.
httpd -f -p 80 -h /www &
trap 'kill $!; exit 0' TERM INT
wait
