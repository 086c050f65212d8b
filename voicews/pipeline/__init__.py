"""The pipeline: a call's session, its steps, the mix bus, the framer and the paced sender.

Never imports the socket (``voicews.call``), the web side or the app: a processor
sees its call only through :class:`voicews.pipeline.session.Session`.
"""
