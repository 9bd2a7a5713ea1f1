"""VoiceMailMain(): listening to messages (fact sheet 5.2).

`core` (login) and `menu` (the main and message menus) are a pure state machine: events in,
actions out (`events`). `driver` turns the actions into Channel and MessageStore calls;
`sayer` turns the abstract things to say (numbers, the intro, the envelope) into prompt names;
`app` is the dial plan application.
"""
