SELECT (SELECT count(*) FROM stock), (SELECT count(*) FROM movement_events)
