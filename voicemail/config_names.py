"""Option names Asterisk 20 reads, so an option we do not know can be told from one we do not
implement yet. Taken from the branch-20 sources: app_voicemail.c actual_load_config (every
`ast_variable_retrieve(cfg, "general", ...)`) and apply_option (mailbox options), and chan_sip.c
reload_config with handle_common_options, handle_t38_options and the jitter buffer (`jb*`),
DTLS (`dtls*`) and TLS (main/tcptls.c) options it passes on.
"""

from __future__ import annotations

# voicemail.conf [general].
VOICEMAIL_GENERAL = frozenset(
    """
    adsifdn adsisec adsiver aliasescontext attach authpassword authuser backupdeleted
    callback charset cidinternalcontexts dialout emailbody emaildateformat emailsubject
    envelope exitcontext expungeonhangup externnotify externpass externpasscheck
    externpassnotify forcegreetings forcename format forward_urgent_auto fromstring
    greetingfolder greetingsfolder imap_poll_logout imapclosetimeout imapflags
    imapfolder imapgreetings imapopentimeout imapparentfolder imapport imapreadtimeout
    imapserver imapwritetimeout leaveurgent listen-control-forward-key
    listen-control-pause-key listen-control-restart-key listen-control-reverse-key
    listen-control-stop-key locale mailcmd maxgreet maxlogins maxmessage maxmsg maxsecs
    maxsilence messagewrap minmessage minpassword minsecs moveheard nextaftercmd
    odbc_audio_on_disk odbcstorage odbctable operator pagerbody pagerdateformat
    pagerfromstring pagersubject password passwordlocation pbxskip pollfreq
    pollmailboxes review saycid sayduration saydurationm searchcontexts sendvoicemail
    serveremail silencethreshold skipms smdienable smdiport tempgreetwarn tps_queue_high
    tps_queue_low tz usedirectory userscontext vm-invalid-password vm-login vm-mismatch
    vm-newpassword vm-newuser vm-passchanged vm-password vm-pls-try-again
    vm-prepend-timeout vm-reenterpassword volgain
    """.split()
)

# voicemail.conf mailbox options (`1000 => pin,name,email,pager,attach=no|tz=eu`).
VOICEMAIL_MAILBOX = frozenset(
    """
    maxsilence silencethreshold
    attach attachextrecs attachfmt backupdeleted callback delete deletevoicemail dialout
    emailbody emailsubject envelope exitcontext forcegreetings forcename fromstring
    imapflags imapfolder imappassword imapport imapsecret imapserver imapuser
    imapvmshareid language leaveurgent locale maxmessage maxmsg maxsecs messagewrap
    minsecs moveheard nextaftercmd operator passwordlocation review saycid sayduration
    saydurationm sendvoicemail serveremail tempgreetwarn tz volgain
    """.split()
)

# sip.conf [general].
SIP_GENERAL = frozenset(
    """
    accept_outofcall_message allow allowexternaldomains allowguest allowoverlap
    allowsubscribe allowtransfer alwaysauthreject auth auth_message_requests
    auth_options_requests authfailureevents autocreatepeer autodomain autoframing
    bindaddr bindport buggymwi callcounter callerid canreinvite compactheaders
    contactacl contactdeny contactpermit context cos_audio cos_sip cos_text cos_video
    defaultexpirey defaultexpiry directmedia directrtpsetup disallow disallowed_methods
    discard_remote_hold_retrieval domain domainsasrealm dtlsautogeneratecert dtlscadir
    dtlscafile dtlscapath dtlscertfile dtlscipher dtlsenable dtlsfingerprint
    dtlsprivatekey dtlsrekey dtlssetup dtlsverify dtmfmode dumphistory
    dynamic_exclude_static dynamic_excludes_static externaddr externhost externip
    externrefresh externtcpport externtlsport faxdetect fromdomain g726nonstandard
    icesupport ignoreregexpire ignoresdpversion insecure jbenable jbforce jbimpl jblog
    jbmaxsize jbresyncthreshold jbsyncvideo jbtargetextra keepalive language
    legacy_useroption_parsing localnet match_auth_username matchexternaddrlocally
    matchexterniplocally maxcallbitrate maxexpirey maxexpiry maxforwards media_address
    minexpirey minexpiry mohinterpret mohsuggest mwi mwi_from mwiexpirey mwiexpiry nat
    notifycid notifyhold notifymimetype notifyringing outboundproxy
    outofcall_message_context parkinglot pedantic preferred_codec_only prematuremedia
    progressinband promiscredir qualify qualifyfreq qualifygap qualifypeers realm
    recordhistory recordofffeature recordonfeature refer_addheaders regcontext
    regextenonqualify register register_retry_403 registerattempts registertimeout
    relaxdtmf rfc2833compensate rpid_immediate rpid_update rtautoclear rtcachefriends
    rtcp_mux rtpbindaddr rtpholdtimeout rtpkeepalive rtptimeout rtsavepath rtsavesysname
    rtupdate sdpowner sdpsession send_diversion sendrpid session-expires session-minse
    session-refresher session-timers shrinkcallerid sipdebug snom_aoc_enabled srvlookup
    sslbindaddr sslcert sslcipher sslclientmethod sslenable sslprivatekey storesipcause
    submaxexpirey submaxexpiry subminexpirey subminexpiry subscribe_network_change_event
    subscribecontext supportpath t1min t38pt_udptl t38pt_usertpsource tcpauthlimit
    tcpauthtimeout tcpbindaddr tcpenable textsupport timerb timert1 tlsbindaddr tlscadir
    tlscafile tlscapath tlscert tlscertfile tlscipher tlsclientmethod tlsdisablev1
    tlsdisablev11 tlsdisablev12 tlsdontverifyserver tlsenable tlsprivatekey
    tlsservercipherorder tlsverifyclient tonezone tos_audio tos_sip tos_text tos_video
    transport trust_id_outbound trustrpid udpbindaddr use_q850_reason useclientcode
    useragent usereqphone videosupport vmexten websocket_enabled websocket_write_timeout
    """.split()
)
