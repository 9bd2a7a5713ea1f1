"""The Asterisk Manager Interface: manager.conf, the wire format, the TCP server, actions."""
