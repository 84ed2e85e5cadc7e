"""The database models; import them from here."""

from webapp.models.job import Job, JobEvent, JobStatus
from webapp.models.newsletter import Delivery, DeliveryStatus, Newsletter, Subscriber
from webapp.models.order import Customer, Order
from webapp.models.photo import Photo
from webapp.models.schedule import Schedule, ScheduleRun
from webapp.models.stored_file import StoredFile
from webapp.models.user import User

__all__ = [
    "Customer",
    "Delivery",
    "DeliveryStatus",
    "Job",
    "JobEvent",
    "JobStatus",
    "Newsletter",
    "Order",
    "Photo",
    "Schedule",
    "ScheduleRun",
    "StoredFile",
    "Subscriber",
    "User",
]
