"""Live trading: Selenium-driven venues, paper mode, journal, risk limits and notifications.

Automating a broker's web interface can break its terms of service. Live
orders are only sent with an explicit opt-in (``--live`` plus a confirmation
value in the config); everything else is a dry run or paper trading.
"""
