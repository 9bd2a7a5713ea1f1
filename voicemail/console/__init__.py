"""The operator's console: commands named as Asterisk names them, one registry for the
control socket (`voicemail -rx`), the interactive console (`-r`) and AMI's Command action."""
