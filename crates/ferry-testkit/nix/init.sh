# init: a simulated boot of this system (stage 2 of NixOS: activate, then start every service;
# after a reboot nothing runs). Called by the simulated `reboot` on /boot/default-system.
exec "$out/bin/switch-to-configuration" test
