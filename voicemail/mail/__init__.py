"""Notification mail for new voicemail (issue 9): settings, variables, composing, the audio
attachment and sending. Self-contained: the deposit wires it in.

    settings = MailSettings.from_general(general, mailbox.options, zonemessages)
    attachment = await asyncio.to_thread(make_attachment, audio, stored_fmt, settings, msgnum)
    mail = build_email(settings, Recipient(...), MessageInfo(...), attachment)
    result = await send(mail, settings)   # sent / temporary / permanent
"""
