"""Notification mail for new voicemail (issue 9): settings, variables, composing, the audio
attachment and sending. Self-contained: the deposit wires it in, roughly so:

    settings = MailSettings.from_general(general, mailbox.options, zonemessages)
    audio = stored_audio if settings.attach else None
    # attachment conversion, MIME and flattening in a worker process (composer.py):
    mail = await composer.email(settings, Recipient(...), MessageInfo(...), audio, stored_fmt)
    result = await send(mail, settings)          # result.status: sent / temporary / permanent
    if recipient.pager:
        await send(build_pager(settings, Recipient(...), MessageInfo(...)), settings)

The configuration loader should count settings.GENERAL_OPTIONS and MAILBOX_OPTIONS as
implemented and SMTP_OPTIONS as our own [general] options.
"""
