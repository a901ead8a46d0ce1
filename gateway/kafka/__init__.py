"""The Kafka edge: topic administration (``admin``), the settings every client uses
(``clients``) and reading a topic back without joining a group (``read``)."""
