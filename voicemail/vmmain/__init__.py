"""VoiceMailMain(): listening to messages (fact sheet 5.2).

`core` (login) and `menu` (the main and message menus) are a pure state machine: events in,
actions out (`events`). `driver` turns the actions into Channel and MessageStore calls;
`sayer` (the protocol) and `engine_sayer` (on voicemail/say) turn the things to say into prompt
names in the listener's language;
`app` is the dial plan application.
"""
